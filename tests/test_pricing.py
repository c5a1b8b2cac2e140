"""The price table (sidecar/pricing.py): overrides, genai-prices, a sent cost wins, unpriced counted."""

from __future__ import annotations

import logging

import httpx
import pytest
from genai_prices import Usage, calc_price
from prometheus_client import CollectorRegistry

from sidecar.config import PricingConfig
from sidecar.pricing import Pricer, table_rate
from sidecar.testing import event, ndjson, running_sidecar


def pricer(**config) -> Pricer:
    return Pricer(PricingConfig(**config), CollectorRegistry())


def outcomes(p: Pricer) -> dict[str, float]:
    return {o: p.outcomes.labels(o)._value.get() for o in ("sent", "override", "table", "unpriced")}


def test_the_table_prices_a_known_model_from_its_tokens():
    p = pricer()
    ev = {"type": "llm.call", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500}
    p.fill(ev)
    assert ev["cost_usd"] == pytest.approx(1000 * 2.5e-6 + 500 * 10e-6)
    assert outcomes(p)["table"] == 1


def test_a_sent_cost_always_wins():
    p = pricer(models={"gpt-4o": {"input_per_mtok": 100.0, "output_per_mtok": 100.0}})
    ev = {"model": "gpt-4o", "input_tokens": 1000, "cost_usd": 0.0}
    p.fill(ev)
    assert ev["cost_usd"] == 0.0 and outcomes(p)["sent"] == 1


def test_a_configured_price_overrides_the_table():
    p = pricer(models={"gpt-4o": {"input_per_mtok": 1.0, "output_per_mtok": 3.0}})
    ev = {"model": "gpt-4o", "input_tokens": 2_000_000, "output_tokens": 1_000_000}
    p.fill(ev)
    assert ev["cost_usd"] == pytest.approx(5.0) and outcomes(p)["override"] == 1


def test_an_unpriced_model_keeps_no_cost_is_counted_and_logged_once(caplog):
    p = pricer()
    with caplog.at_level(logging.WARNING, "agent_sidecar.pricing"):
        for _ in range(3):
            ev = {"model": "my-own-finetune-xyz", "input_tokens": 5}
            p.fill(ev)
            assert "cost_usd" not in ev
    assert outcomes(p)["unpriced"] == 3
    assert [r.getMessage() for r in caplog.records] == [
        "no price for model 'my-own-finetune-xyz' (provider None): its events carry no cost_usd; add it under pricing.models"
    ]


@pytest.mark.parametrize(
    "event",
    [{"model": "gpt-4o"}, {"input_tokens": 5}, {"model": "", "input_tokens": 5}, {"model": "gpt-4o", "input_tokens": -1}, {"model": "gpt-4o", "tokens": 9}],
)
def test_nothing_to_price_is_left_alone(event):
    p = pricer()
    before = dict(event)
    p.fill(event)
    assert event == before and sum(outcomes(p).values()) == 0


def test_pricing_can_be_turned_off():
    p = pricer(enabled=False)
    ev = {"model": "gpt-4o", "input_tokens": 5}
    p.fill(ev)
    assert "cost_usd" not in ev


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "claude-sonnet-4-5", "gpt-4o"])
def test_prices_match_the_library_across_its_tiers_and_an_unknown_provider_falls_back_to_the_model_name(model):
    rate = table_rate(model, "no-such-provider")
    assert rate is not None
    for tokens in (0, 1000, 128_000, 128_001, 200_000, 200_001, 300_000):  # below, at and above long-context tiers (input and output)
        expected = calc_price(Usage(input_tokens=tokens, output_tokens=1000), model).total_price
        assert rate(tokens, 1000) == pytest.approx(float(expected), rel=1e-12), tokens
    assert table_rate("surely-not-a-model-name", None) is None


def test_a_model_with_several_tiers_gets_the_highest_tier_its_input_exceeds():
    model, provider = "qwen/qwen3.7-flash", "openrouter"  # tiers at 32k and 256k input tokens
    rate = table_rate(model, provider)
    assert rate is not None
    for tokens in (0, 32_000, 32_001, 256_000, 256_001, 400_000):
        expected = calc_price(Usage(input_tokens=tokens, output_tokens=1000), model, provider_id=provider).total_price
        assert rate(tokens, 1000) == pytest.approx(float(expected), rel=1e-12), tokens


def test_each_model_is_looked_up_once():
    calls = []

    def lookup(model, provider):
        calls.append((model, provider))
        return None if model == "x" else (lambda i, o: 1.0)

    p = Pricer(PricingConfig(), CollectorRegistry(), lookup=lookup)
    for model in ("x", "y", "x", "y", "y"):
        p.fill({"model": model, "input_tokens": 1}, "prov")
    assert calls == [("x", "prov"), ("y", "prov")]


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        ({"m": {"input_per_mtok": 1}}, "pricing.models: m: must be {input_per_mtok: N, output_per_mtok: N}"),
        ({"m": {"input_per_mtok": -1, "output_per_mtok": 1}}, "pricing.models: m.input_per_mtok: must be a number >= 0, not -1"),
        ({"m": {"input_per_mtok": True, "output_per_mtok": 1}}, "must be a number >= 0, not True"),
        (["m"], "pricing.models: must be a mapping of model name"),
    ],
)
def test_bad_price_overrides_are_config_errors_with_their_path(models, problem):
    from sidecar.config import config_from_dict
    from sidecar.exceptions import ConfigError

    with pytest.raises(ConfigError) as exc:
        config_from_dict({"pricing": {"models": models}})
    assert problem in str(exc.value)


def test_every_transport_prices_events_with_a_model_and_tokens_and_a_sent_cost_wins():
    with running_sidecar(**{"pricing.models": {"house-model": {"input_per_mtok": 2.0, "output_per_mtok": 10.0}}}) as s:
        s.send_unix(ndjson(event(type="llm.call", agent="u", model="house-model", input_tokens=1_000_000, output_tokens=100_000)))
        r = httpx.post(f"{s.url}/v1/events", json=[
            event(type="llm.call", agent="h", model="house-model", input_tokens=500_000),
            event(type="llm.call", agent="h", model="house-model", input_tokens=500_000, cost_usd=0.25),
            event(type="llm.call", agent="h", model="nobody-prices-this", input_tokens=10),
        ])
        assert r.status_code == 202
        s.wait_processed(4)
        assert s.value("agent_cost_usd_total", {"agent": "u", "model": "house-model"}) == 3.0  # 2 $ in + 1 $ out
        assert s.value("agent_cost_usd_total", {"agent": "h", "model": "house-model"}) == 1.0 + 0.25
        assert s.value("agent_cost_usd_total", {"agent": "h", "model": "nobody-prices-this"}) is None
        outcomes = {o: s.value("sidecar_pricing_events_total", {"outcome": o}) for o in ("override", "sent", "unpriced")}
        assert outcomes == {"override": 2.0, "sent": 1.0, "unpriced": 1.0}
