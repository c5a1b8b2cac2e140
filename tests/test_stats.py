"""GET /v1/stats on a real sidecar (uvicorn + Unix socket), with an injected clock."""

from __future__ import annotations

import httpx
import pytest

from sidecar.contract import MAX_COST_USD, MAX_DURATION_MS
from sidecar.testing import FakeClock, event, ndjson, running_sidecar


@pytest.fixture
def clocked():
    clock = FakeClock()
    with running_sidecar(clock=clock) as s:
        yield s, clock


def send(s, clock, *events) -> None:
    before = s.sidecar.pipeline.processed
    s.send_unix(ndjson(*events))
    s.wait_processed(before + len(events))


def test_events_sent_over_the_socket_show_up_with_exact_numbers(clocked):
    s, clock = clocked
    send(
        s, clock,
        *[event("llm.call", timestamp=clock.now - 1, agent="planner", duration_ms=float(ms), input_tokens=10, output_tokens=5, cost_usd=0.5, run_id="r1") for ms in range(1, 101)],
        event("agent.failed", timestamp=clock.now - 120, agent="coder", run_id="r2"),
    )
    doc = httpx.get(f"{s.url}/v1/stats", params={"window": "5m"}).json()
    assert doc["window"] == "5m" and doc["window_seconds"] == 300 and doc["exact"] is True
    assert doc["as_of"] == "2026-09-21T14:13:20.000Z"
    assert doc["events"] == 101 and doc["errors"] == 1
    assert doc["events_by_type"] == {"llm.call": 100, "agent.failed": 1}
    assert doc["events_by_severity"] == {"info": 100, "error": 1}
    assert doc["duration_ms"] | {} == {"count": 100, "sum": 5050.0, "avg": 50.5, "min": 1.0, "max": 100.0, "p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
    assert doc["tokens"] == {"input": 1000, "output": 500, "total": 1500}
    assert doc["cost_usd"] == 50.0
    assert doc["rates"] == {"events_per_second": 101 / 300, "tokens_per_second": 5.0, "cost_per_hour_usd": 600.0}
    assert doc["agents_active"] == 2 and doc["runs_seen"] == doc["workflows_active"] == 2
    one_minute = httpx.get(f"{s.url}/v1/stats", params={"window": "1m"}).json()
    assert one_minute["events"] == 100 and one_minute["errors"] == 0


def test_no_window_returns_every_window_and_cumulative(clocked):
    s, clock = clocked
    send(s, clock, event("llm.call", timestamp=clock.now - 400, duration_ms=3.0))
    doc = httpx.get(f"{s.url}/v1/stats").json()
    assert list(doc["windows"]) == ["1m", "5m", "15m", "1h"]
    assert [doc["windows"][w]["events"] for w in doc["windows"]] == [0, 0, 1, 1]
    assert doc["windows"]["1m"]["duration_ms"]["p99"] is None
    assert doc["cumulative"]["events"] == 1 and doc["cumulative"]["window"] == "cumulative"


def test_by_agent_returns_groups_largest_first_capped_by_limit(clocked):
    s, clock = clocked
    send(s, clock, *[event(agent=a, duration_ms=d) for a, d in [("a", 1), ("b", 2), ("b", 4), ("c", 8), ("c", 9), ("c", 10)]])
    doc = httpx.get(f"{s.url}/v1/stats", params={"window": "1m", "by": "agent", "limit": "2"}).json()
    assert doc["by"] == "agent" and doc["events"] == 6
    assert [(g["key"], g["events"], g["duration_ms"]["max"]) for g in doc["groups"]] == [("c", 3, 10.0), ("b", 2, 4.0)]
    filtered = httpx.get(f"{s.url}/v1/stats", params={"window": "1m", "agent": "b"}).json()
    assert filtered["events"] == 2 and filtered["duration_ms"]["p50"] == 2.0


def test_the_window_moves_with_the_injected_clock(clocked):
    s, clock = clocked
    send(s, clock, event(duration_ms=1.0))
    assert httpx.get(f"{s.url}/v1/stats?window=1m").json()["events"] == 1
    clock.advance(60.5)
    assert httpx.get(f"{s.url}/v1/stats?window=1m").json()["events"] == 0
    assert httpx.get(f"{s.url}/v1/stats?window=5m").json()["events"] == 1


@pytest.mark.parametrize(
    ("query", "message", "reason"),
    [
        ("window=7m", "unknown window '7m' (configured: 1m, 5m, 15m, 1h)", "unknown_window"),
        ("window=%C2%B2", "unknown window '²'", "unknown_window"),
        ("colour=red", "unknown parameter 'colour'", "unknown_parameter"),
        ("window=1m&by=region", "unknown by 'region'", "unknown_by"),
        ("limit=0", "limit must be a positive integer, not '0'", "bad_limit"),
        ("limit=000", "limit must be a positive integer, not '000'", "bad_limit"),
        ("limit=many", "limit must be a positive integer, not 'many'", "bad_limit"),
        ("limit=%C2%B2", "limit must be a positive integer, not '²'", "bad_limit"),  # "²".isdigit() is True
        ("limit=%D9%A3", "limit must be a positive integer, not '٣'", "bad_limit"),  # Arabic-Indic three
        ("limit=1001", "limit must be at most 1000, not 1001", "bad_limit"),
        ("limit=99999999999999999999999", "limit must be at most 1000", "bad_limit"),
        pytest.param("limit=" + "9" * 5000, "limit must be at most 1000", "bad_limit", id="limit=9x5000"),  # int() refuses it
        ("agent=a&agent=b", "parameter 'agent' given more than once", "repeated_parameter"),
        ("window=1m&by=agent&window=5m", "parameter 'window' given more than once", "repeated_parameter"),
    ],
)
def test_bad_query_is_a_400_naming_what_was_wrong_and_is_counted(sidecar, query, message, reason):
    r = httpx.get(f"{sidecar.url}/v1/stats?{query}")
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert sidecar.value("sidecar_stats_requests_refused_total", {"reason": reason}) == 1


def test_amounts_at_and_past_the_contract_limits_never_make_stats_or_metrics_fail(clocked):
    # Past the limits the decoder refuses the event (out_of_range); at them, sums stay finite.
    # The store's own clamp for values that reach it some other way is the hypothesis test in
    # tests/sinks/test_window.py.
    s, clock = clocked
    huge = 1.7976931348623157e308
    r = httpx.post(f"{s.url}/v1/events", json=[event(agent="a", duration_ms=huge), event(agent="a", cost_usd=huge)])
    assert r.status_code == 400 and {e["error"].split(":")[0] for e in r.json()["errors"]} == {"out_of_range"}
    send(s, clock, *[event(agent=a, duration_ms=MAX_DURATION_MS, cost_usd=MAX_COST_USD, run_id="r") for a in ("a", "a", "b")])
    for query in ("", "?window=1m", "?by=agent", "?window=5m&agent=a", "?by=agent&model=none"):
        r = httpx.get(f"{s.url}/v1/stats{query}")
        assert r.status_code == 200, (query, r.text[:300])
        assert "Infinity" not in r.text and "NaN" not in r.text
    doc = httpx.get(f"{s.url}/v1/stats?window=1m").json()
    assert doc["events"] == 3 and doc["cost_usd"] == 3 * MAX_COST_USD
    assert httpx.get(f"{s.url}/metrics").status_code == 200


def test_a_filter_on_a_value_longer_than_a_label_matches_the_events_that_carry_it(clocked):
    s, clock = clocked
    long_agent = "agent-" + "x" * 5000
    send(s, clock, event(agent=long_agent, duration_ms=2.0), event(agent=long_agent[:128] + "tail", duration_ms=4.0), event(agent="other"))
    doc = httpx.get(f"{s.url}/v1/stats", params={"window": "1m", "agent": long_agent}).json()
    assert doc["events"] == 2  # both cut to the same 128 characters, as their metric labels are
    groups = httpx.get(f"{s.url}/v1/stats", params={"window": "1m", "by": "agent"}).json()["groups"]
    assert {g["key"]: g["events"] for g in groups} == {long_agent[:128]: 2, "other": 1}


def test_stats_need_the_bearer_token_when_one_is_configured():
    with running_sidecar(**{"auth.token": "s3cret"}) as s:
        assert httpx.get(f"{s.url}/v1/stats").status_code == 401
        ok = httpx.get(f"{s.url}/v1/stats?window=1m", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["events"] == 0


def test_metrics_exposes_window_gauges_and_late_events(clocked):
    s, clock = clocked
    send(s, clock, *[event(duration_ms=float(ms)) for ms in (100, 200, 300, 400)], event(timestamp=clock.now - 7200))
    body = httpx.get(f"{s.url}/metrics").text
    assert 'agent_window_duration_seconds{quantile="0.5",window="1m"} 0.2' in body
    assert 'agent_window_duration_seconds{quantile="0.99",window="1h"} 0.4' in body
    assert 'agent_window_events{window="5m"} 4.0' in body
    assert "sidecar_window_late_events_total 1.0" in body


def test_promtool_accepts_the_window_exposition():
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    clock = FakeClock()
    with running_sidecar(clock=clock, **{"windows.prometheus_by": ["agent"]}) as s:
        send(s, clock, *[event(agent=a, duration_ms=float(ms)) for a in ("a", "b") for ms in range(10)])
        body = httpx.get(f"{s.url}/metrics").text
    assert 'agent_window_events{agent="b",window="1m"} 10.0' in body
    assert "# TYPE agent_window_duration_seconds summary" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tool_is_a_filter_and_a_by_dimension(clocked):
    s, clock = clocked
    send(s, clock, event(type="tool.call", agent="coder", tool="search", duration_ms=10.0),
         event(type="tool.call", agent="coder", tool="search", duration_ms=30.0),
         event(type="tool.call", agent="coder", tool="shell", duration_ms=500.0), event(agent="coder"))
    groups = httpx.get(f"{s.url}/v1/stats", params={"window": "1m", "by": "tool"}).json()["groups"]
    assert {g["key"]: g["events"] for g in groups} == {"search": 2, "shell": 1, None: 1}
    doc = httpx.get(f"{s.url}/v1/stats", params={"window": "1m", "tool": "shell"}).json()
    assert doc["events"] == 1 and doc["duration_ms"]["p50"] == 500.0
