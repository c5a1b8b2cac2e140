"""The price table: `cost_usd` for events that carry a model and tokens but no cost.

Prices come from per-model overrides in the config (`pricing.models`) first, then from
`genai-prices` (pydantic's maintained table of LLM prices, shipped inside the package: no
network). A cost the sender put on the event always wins; a model neither knows keeps no
cost and is counted, so a dashboard can tell "free" from "unpriced".

`Pricer.fill` works on event dicts before they are encoded and decoded, so any listener
can call it; today the OTLP listener does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from sidecar.config import PricingConfig

log = logging.getLogger("agent_sidecar.pricing")

_MAX_CACHED = 4096  # distinct (provider, model) names remembered; a hostile sender must not grow it forever
_MAX_LOGGED = 100  # unpriced model names logged once each, at most this many

# Dollars for (input_tokens, output_tokens).
Rate = Callable[[int, int], float]


def _flat(input_per_mtok: float, output_per_mtok: float) -> Rate:
    per_in, per_out = input_per_mtok / 1e6, output_per_mtok / 1e6
    return lambda i, o: i * per_in + o * per_out


def _per_token(price: Any, input_tokens: int) -> float:
    """Dollars per token of one price (flat, or tiered the way genai-prices' TieredPrices documents
    it: the highest tier whose start the request's input tokens exceed applies to every token)."""
    if price is None:
        return 0.0
    tiers = getattr(price, "tiers", None)
    if tiers is None:
        return float(price) / 1e6
    applicable = price.base
    for tier in reversed(tiers):
        if input_tokens > tier.start:
            applicable = tier.price
            break
    return float(applicable) / 1e6


def table_rate(model: str, provider: str | None) -> Rate | None:
    """The genai-prices rate for a model (and provider when known), or None when it has none."""
    from genai_prices import Usage, calc_price

    probe = Usage(input_tokens=0, output_tokens=0)
    for provider_id in ([provider, None] if provider else [None]):
        try:
            found = calc_price(probe, model, provider_id=provider_id)
        except LookupError:
            continue
        # The library's calc_price costs ~1 ms a call (~0.2 ms when flat): resolve the model once,
        # then price each event from its input and output prices alone (the only usage events carry).
        inp = getattr(found.model_price, "input_mtok", None)
        out = getattr(found.model_price, "output_mtok", None)
        if getattr(inp, "tiers", None) is None and getattr(out, "tiers", None) is None:
            return _flat(float(inp or 0), float(out or 0))
        return lambda i, o: i * _per_token(inp, i) + o * _per_token(out, i)
    return None


def _count_or_none(n: Any) -> bool:
    return n is None or (n.__class__ is int and n >= 0)


class Pricer:
    """Fills in `cost_usd` from the config's overrides, then the genai-prices table."""

    def __init__(self, config: PricingConfig, registry: CollectorRegistry, lookup: Callable[[str, str | None], Rate | None] = table_rate):
        self.config = config
        self._lookup = lookup
        self._overrides = {m: _flat(p["input_per_mtok"], p["output_per_mtok"]) for m, p in config.models.items()}
        self._cache: dict[tuple[str | None, str], Rate | None] = {}
        self._logged: set[str] = set()
        self.outcomes = Counter(
            "sidecar_pricing_events",
            "Events with a model and tokens, by how their cost_usd was set: sent (by the app, it wins), "
            "override (pricing.models), table (genai-prices) or unpriced (no price known: left without cost).",
            ["outcome"],
            registry=registry,
        )
        # Resolved once: labels() costs more than the pricing itself.
        self._count = {outcome: self.outcomes.labels(outcome).inc for outcome in ("sent", "override", "table", "unpriced")}
        if config.enabled and lookup is table_rate:
            import genai_prices  # noqa: F401  (~0.3 s: paid at startup, not by the first event's request)

    def fill(self, event: dict[str, Any], provider: str | None = None) -> None:
        """Set `event["cost_usd"]` when the event has a model and tokens but no cost of its own."""
        model = event.get("model")
        i, o = event.get("input_tokens"), event.get("output_tokens")
        if not self.config.enabled or not isinstance(model, str) or not model or (i is None and o is None):
            return
        if event.get("cost_usd") is not None:
            self._count["sent"]()
            return
        if not (_count_or_none(i) and _count_or_none(o)):
            return  # the decoder will refuse these tokens with a clear reason: nothing to price
        rate = self._overrides.get(model)
        outcome = "override"
        if rate is None:
            rate, outcome = self._table(model, provider), "table"
        if rate is None:
            self._count["unpriced"]()
            if len(self._logged) < _MAX_LOGGED and model not in self._logged:
                self._logged.add(model)
                log.warning("no price for model %r (provider %r): its events carry no cost_usd; add it under pricing.models", model[:128], provider)
            return
        event["cost_usd"] = rate(i or 0, o or 0)
        self._count[outcome]()

    def _table(self, model: str, provider: str | None) -> Rate | None:
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        rate = self._cache[key] = self._lookup(model, provider)
        return rate
