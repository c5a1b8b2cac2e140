"""GET /v1/series: exact per-step numbers over a window, with the filters of /v1/stats, from a real sidecar."""

from __future__ import annotations

import json
import math
import random
import time
import urllib.error
import urllib.request

import pytest

from sidecar.client.senders import HttpSender
from sidecar.testing import FakeClock, running_sidecar


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def nearest_rank(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent * len(ordered) / 100)) - 1]


def test_each_step_holds_the_exact_numbers_of_its_events_and_filters_apply():
    now = math.floor(time.time() / 10) * 10 + 5.0  # 5 s into a 10 s step
    clock = FakeClock(now)
    rng = random.Random(7)
    first = now - 55  # six steps of 10 s, the last holding now
    expected = []
    events = []
    for k in range(6):
        durations = [round(rng.lognormvariate(5, 1), 3) for _ in range(20 + 7 * k)]
        errors = k  # step k has k failed events
        for i, d in enumerate(durations):
            events.append({"type": "llm.call", "agent": "a", "model": "m", "timestamp": first + k * 10 + 1 + i * 0.01, "duration_ms": d,
                           "input_tokens": 100, "output_tokens": 10, "cost_usd": 0.5, "success": i >= errors})
            events.append({"type": "tool.call", "agent": "b", "timestamp": first + k * 10 + 2, "duration_ms": 1e6})  # filtered out
        expected.append((len(durations), errors, 110 * len(durations), 0.5 * len(durations), durations))
    with running_sidecar(clock=clock) as sc:
        sender = HttpSender(sc.url)
        sender.send(b"\n".join(json.dumps(e).encode() for e in events))
        sender.close()
        sc.wait_processed(len(events))
        status, doc = get(f"{sc.url}/v1/series?window=1m&step=10s&agent=a")
        assert status == 200, doc
        _, everything = get(f"{sc.url}/v1/series?window=1m&step=30s")
        _, nothing = get(f"{sc.url}/v1/series?window=1m&step=10s&model=nope")
    assert (doc["window"], doc["step"], doc["filters"]) == ("1m", "10s", {"agent": "a"})
    assert [p["t"] for p in doc["points"]] == [first + 10 * k for k in range(6)]
    for point, (n, errors, tokens, cost, durations) in zip(doc["points"], expected):
        assert (point["events"], point["errors"], point["tokens"]) == (n, errors, tokens)
        assert point["cost_usd"] == pytest.approx(cost)
        assert point["duration_ms"] == {"count": n, **{f"p{p}": nearest_rank(durations, p) for p in (50, 95, 99)}}
    # 30 s steps are aligned to multiples of 30 s of epoch time, the last holding now
    start30 = (math.floor(now / 30) + 1) * 30 - 60
    assert [p["events"] for p in everything["points"]] == [
        sum(1 for e in events if start30 + 30 * k <= e["timestamp"] < start30 + 30 * (k + 1)) for k in range(2)
    ]
    assert all(p["events"] == 0 and p["duration_ms"]["p95"] is None for p in nothing["points"])


@pytest.mark.parametrize(
    ("query", "names"),
    [("step=7s", "step"), ("window=2h", "insights.retention"), ("window=1m&step=2m", "window / step"),
     ("agent=a&bogus=1", "'bogus'"), ("step=%C2%B2s", "step")],
)
def test_a_bad_parameter_gets_400_naming_it(sidecar, query, names):
    status, doc = get(f"{sidecar.url}/v1/series?{query}")
    assert status == 400 and names in doc["error"]
