"""The price table: `cost_usd` for events that carry a model and tokens but no cost.

Prices come from per-model overrides in the config (`pricing.models`) first, then from
`genai-prices` (pydantic's maintained table of LLM prices, shipped inside the package: no
network). A cost the sender put on the event always wins; a model neither knows keeps no
cost and is counted, so a dashboard can tell "free" from "unpriced".

Two entry points, one table: `Pricer.fill` works on an event dict before it is encoded (the OTLP
listener, which knows the provider and wants the cost in the event's JSON for the tail), and
`Pricer.fill_events` on decoded events (every other transport: `protocol.EventDecoder` calls it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from sidecar.config import PricingConfig
from sidecar.contract import MAX_COST_USD
from sidecar.types import Event

log = logging.getLogger("agent_sidecar.pricing")

_MAX_CACHED = 4096  # distinct (provider, model) names remembered; a hostile sender must not grow it forever
_MAX_LOGGED = 100  # unpriced model names logged once each, at most this many

# Dollars for (input_tokens, output_tokens).
Rate = Callable[[int, int], float]


def _flat(input_per_mtok: float, output_per_mtok: float) -> Rate:
    per_in, per_out = input_per_mtok / 1e6, output_per_mtok / 1e6
    return lambda i, o: i * per_in + o * per_out


def _tiers(price: Any) -> tuple[float, tuple[tuple[Any, float], ...]]:
    """A genai-prices price as dollars per token: its base, and (start, price) per tier, in the order
    they are tried (the way genai-prices' TieredPrices documents it: the highest tier whose start the
    request's input tokens exceed applies to every token). Decimals become floats once, here."""
    if price is None:
        return 0.0, ()
    tiers = getattr(price, "tiers", None)
    if tiers is None:
        return float(price) / 1e6, ()
    return float(price.base) / 1e6, tuple((tier.start, float(tier.price) / 1e6) for tier in reversed(tiers))


def _tiered(input_price: Any, output_price: Any) -> Rate:
    in_base, in_tiers = _tiers(input_price)
    out_base, out_tiers = _tiers(output_price)

    def rate(i: int, o: int) -> float:
        per_in, per_out = in_base, out_base
        for start, price in in_tiers:
            if i > start:
                per_in = price
                break
        for start, price in out_tiers:
            if i > start:  # the input tokens pick the output's tier too
                per_out = price
                break
        return i * per_in + o * per_out

    return rate


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
        return _tiered(inp, out)
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
            # ~0.35 s at startup (the import, then the first lookup loading the bundled table), not
            # paid by the first event's request.
            table_rate("gpt-4o", None)

    def fill(self, event: dict[str, Any], provider: str | None = None) -> None:
        """Set `event["cost_usd"]` when the event has a model and tokens but no cost of its own."""
        self.fill_dicts([(event, provider)])

    def fill_dicts(self, items: Iterable[tuple[dict[str, Any], str | None]]) -> None:
        """`fill` for (event dict, provider) pairs; the counters move once for them all."""
        if not self.config.enabled:
            return
        counts = dict.fromkeys(self._count, 0)
        for event, provider in items:
            model = event.get("model")
            i, o = event.get("input_tokens"), event.get("output_tokens")
            if not isinstance(model, str) or not model or (i is None and o is None):
                continue
            if event.get("cost_usd") is not None:
                counts["sent"] += 1
                continue
            if not (_count_or_none(i) and _count_or_none(o)):
                continue  # the decoder will refuse these tokens with a clear reason: nothing to price
            rate, outcome = self._rate(model, provider)
            counts[outcome] += 1
            if rate is not None:
                event["cost_usd"] = rate(i or 0, o or 0)
        self._flush(counts)

    def fill_events(self, events: list[Event]) -> None:
        """`fill` for decoded events (whose fields the decoder has already validated); the
        counters move once per batch, since labels().inc() per event would cost more than pricing."""
        if not self.config.enabled:
            return
        # Two comprehensions, not a loop with a counter per event: most events send their cost.
        priceable = [ev for ev in events if ev.model is not None and (ev.input_tokens is not None or ev.output_tokens is not None)]
        todo = [ev for ev in priceable if ev.cost_usd is None]
        counts = dict.fromkeys(self._count, 0)
        counts["sent"] = len(priceable) - len(todo)
        for ev in todo:
            rate, outcome = self._rate(ev.model, None)  # type: ignore[arg-type]  # priceable: a model
            counts[outcome] += 1
            if rate is not None:
                ev.cost_usd = min(rate(ev.input_tokens or 0, ev.output_tokens or 0), MAX_COST_USD)
        self._flush(counts)

    def _flush(self, counts: dict[str, int]) -> None:
        for outcome, n in counts.items():
            if n:
                self._count[outcome](n)

    def _rate(self, model: str, provider: str | None) -> tuple[Rate | None, str]:
        """The rate for a model and where it came from (or None, "unpriced", logged once per model)."""
        rate = self._overrides.get(model)
        if rate is not None:
            return rate, "override"
        rate = self._table(model, provider)
        if rate is not None:
            return rate, "table"
        if len(self._logged) < _MAX_LOGGED and model not in self._logged:
            self._logged.add(model)
            log.warning("no price for model %r (provider %r): its events carry no cost_usd; add it under pricing.models", model[:128], provider)
        return None, "unpriced"

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
