"""/v1/insights: every demo fault is found by a real sidecar with the right kind and subject, a
healthy stream yields nothing above info, small counts never fire, and the query's edges
(parameters, token, gauge, CLI) behave."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from sidecar import cli
from sidecar.commands.demo import SCENARIOS
from sidecar.config import Config
from sidecar.insights import KINDS, _group_sums, find, human_ms, p95
from sidecar.protocol import EventDecoder
from sidecar.sinks.insights import FIELDS, InsightsStore, Period
from sidecar.testing import FakeClock, running_sidecar, wait_until
from sidecar.types import Batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # not from conftest: tests/sinks has one too

WINDOW, BASELINE = "5m", "20m"
SHORT = {"insights.window": 300.0, "insights.baseline": 1200.0}


def demo(url: str, name: str, *extra: str) -> None:
    """20 simulated minutes of the scenario, stamped to end now, then one live line."""
    assert cli.main([
        "demo", "--url", url, "--scenario", name, "--seed", "1", "--history", BASELINE, "--workflows", "24",
        "--duration", "0.05", "--rate", "20", "--invalid", "0", *extra,
    ]) == 0


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def insights(url: str) -> dict:
    status, doc = get(f"{url}/v1/insights?window={WINDOW}&baseline={BASELINE}")
    assert status == 200, doc
    return doc


def above_info(doc: dict) -> list[dict]:
    return [f for f in doc["findings"] if f["severity"] != "info"]


FAULTS = [name for name in SCENARIOS if name != "healthy"]
# Abandonment shows only once lifecycle.abandon_after has passed: 6m here (longer than any healthy
# demo run), 6m more history than the baseline, the fault from 6m before the window (as in
# bench/insights_detection.py).
ABANDON = {"lifecycle.abandon_after": 360.0}
ABANDON_DEMO = ("--history", "26m", "--onset", "15m")


@pytest.mark.parametrize("name", FAULTS)
def test_each_injected_fault_is_found_with_its_kind_and_subject(name):
    expect = SCENARIOS[name].expect
    assert expect is not None
    kind, subject = expect[0], dict(expect[1])
    abandoned = name == "abandoned_runs"
    with running_sidecar(**SHORT, **(ABANDON if abandoned else {})) as sc:
        demo(sc.url, name, *(ABANDON_DEMO if abandoned else ()))
        hits: list[dict] = []
        doc: dict = {}

        def found() -> bool:  # abandonment is counted by the pipeline's once-a-second sweep
            nonlocal doc
            doc = insights(sc.url)
            hits[:] = [f for f in above_info(doc) if f["kind"] == kind and all(f["subject"].get(k) == v for k, v in subject.items())]
            return bool(hits)

        try:
            wait_until(found, name, timeout=10)
        except TimeoutError:
            pass
    assert hits, [(f["kind"], f["subject"]) for f in doc["findings"]]
    if abandoned:  # the rising abandonment, not runs overdue while still open
        assert hits[0]["evidence"]["abandoned"] >= 5 and "abandoned" in hits[0]["summary"], hits[0]
    finding = hits[0]
    assert finding["summary"].endswith(".") and finding["suggestion"]
    assert all(v is None or isinstance(v, (int, float, dict)) for v in finding["evidence"].values())
    assert (doc["window"], doc["baseline"], doc["exact"]) == (WINDOW, BASELINE, True)


def test_a_healthy_stream_yields_nothing_above_info_though_every_kind_judged_subjects():
    with running_sidecar(**SHORT) as sc:
        demo(sc.url, "healthy")
        doc = insights(sc.url)
    assert above_info(doc) == []
    assert set(doc["checked"]) == set(KINDS)
    assert all(n > 0 for n in doc["checked"].values()), doc["checked"]


def test_findings_are_ranked_by_severity_then_impact():
    with running_sidecar(**SHORT) as sc:
        demo(sc.url, "stuck_runs")
        findings = insights(sc.url)["findings"]
    order = {"critical": 0, "warning": 1, "info": 2}
    assert [order[f["severity"]] for f in findings] == sorted(order[f["severity"]] for f in findings)
    assert findings[0]["kind"] == "stuck" and findings[-1]["severity"] == "info"


def test_the_gauge_and_the_cli_show_the_active_findings():
    with running_sidecar(**SHORT) as sc:
        demo(sc.url, "failing_model")
        with urllib.request.urlopen(f"{sc.url}/metrics", timeout=30) as response:
            exposition = response.read().decode()
        env = {"PYTHONPATH": REPO}
        table = subprocess.run([sys.executable, "-m", "sidecar", "insights", "--url", sc.url, "--window", WINDOW, "--baseline", BASELINE],
                               capture_output=True, text=True, timeout=60, env=env)
        raw = subprocess.run([sys.executable, "-m", "sidecar", "insights", "--url", sc.url, "--window", WINDOW, "--baseline", BASELINE, "--json"],
                             capture_output=True, text=True, timeout=60, env=env)
    active = {line.split(" ")[0]: float(line.split(" ")[1]) for line in exposition.splitlines() if line.startswith("agent_insights{")}
    assert len(active) == len(KINDS) * 3  # every kind and severity, zero when none
    hotspots = sum(v for k, v in active.items() if 'kind="error_hotspot"' in k and 'severity="info"' not in k)
    assert hotspots >= 1
    assert table.returncode == 0, table.stderr
    assert "error_hotspot" in table.stdout and "model=gpt-4o-mini" in table.stdout
    assert "1. " in table.stdout  # the numbered suggestions
    assert raw.returncode == 0 and any(f["kind"] == "error_hotspot" for f in json.loads(raw.stdout)["findings"])


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("window=5m&bogus=1", "'bogus'"),
        ("window=%EF%BC%95m", "window"),  # a full-width digit
        ("baseline=%C2%B2h", "baseline"),  # a superscript two: str.isdigit() says yes
        ("window=soon", "window"),
        ("window=1h&baseline=15m", "baseline"),
        ("window=5m&baseline=2h", "insights.retention"),
        ("window=1s", "insights.bucket"),
    ],
)
def test_a_bad_parameter_gets_400_naming_it(sidecar, query, names):
    status, doc = get(f"{sidecar.url}/v1/insights?{query}")
    assert status == 400
    assert names in doc["error"]
    assert get(f"{sidecar.url}/v1/insights")[0] == 200  # and the sidecar answers on


def test_the_token_applies_as_for_stats():
    with running_sidecar(**{"auth.token": "s3cret"}) as sc:
        assert get(f"{sc.url}/v1/insights")[0] == 401
        assert get(f"{sc.url}/v1/insights", "wrong")[0] == 401
        status, doc = get(f"{sc.url}/v1/insights", "s3cret")
    assert status == 200 and (doc["window"], doc["baseline"]) == ("15m", "1h")


def test_the_cli_names_an_unreachable_sidecar():
    result = subprocess.run([sys.executable, "-m", "sidecar", "insights", "--url", "http://127.0.0.1:9"],
                            capture_output=True, text=True, timeout=60, env={"PYTHONPATH": REPO})
    assert result.returncode == 1 and "cannot reach" in result.stderr


# -- the rules on hand-made streams (no sidecar: the store and the pure rules) ---------


def judge(events: list[dict], now: float, **changes: float) -> list[dict]:
    config = Config().replace(**{"insights.window": 300.0, "insights.baseline": 1200.0, **{f"insights.{k}": v for k, v in changes.items()}})
    store = InsightsStore(config.insights, clock=lambda: now)
    lines = [json.dumps({"timestamp": now - 1, **e}).encode() for e in events]
    decoded, _, rejected = EventDecoder().decode(lines, now)
    assert rejected == []
    store.consume(Batch(decoded, lines, now, "test"))
    return [f.doc() for f in find(store.snapshot(300.0, 1200.0), config.insights).findings]


def failing_calls(n: int, model: str = "m1") -> list[dict]:
    return [{"type": "llm.call", "agent": "a", "model": model, "run_id": f"r{i}", "invocation_id": f"i{i}",
             "success": False, "error": "server_error"} for i in range(n)]


def test_small_counts_never_fire_and_the_minimum_sample_is_the_gate():
    now = time.time()
    few = failing_calls(49)  # every call fails, but one short of insights.min_events
    assert judge(few, now) == []
    enough = judge(failing_calls(50), now)
    assert {f["kind"] for f in enough} == {"error_hotspot"}
    assert enough[0]["subject"] in ({"agent": "a"}, {"model": "m1"})
    assert enough[0]["evidence"]["errors"] == 50 and enough[0]["evidence"]["top_errors"] == {"server_error": 50}


def test_a_group_sums_every_subject_in_it_and_its_top_errors_count_across_them():
    """An agent's events spread over subjects (type x workflow x model): error_hotspot sums them
    all, counts each error kind over all of them, and leaves other types out of a model's group."""
    now = time.time()
    events = []
    for workflow, model, errors in (("w1", "m1", {"timeout": 20, "server_error": 15}), ("w2", "m2", {"server_error": 10}),
                                    ("w3", "m1", {"timeout": 2})):
        for error, n in errors.items():
            events += [{"type": "llm.call", "agent": "a", "workflow": workflow, "model": model, "success": False, "error": error}] * n
        events += [{"type": "llm.call", "agent": "a", "workflow": workflow, "model": model}] * 10
    events += [{"type": "tool.call", "agent": "a", "model": "m1", "success": False, "error": "tool_error"}] * 30
    found = {(f["kind"], tuple(f["subject"].items())): f for f in judge(events, now)}
    by_agent = found[("error_hotspot", (("agent", "a"),))]["evidence"]
    assert (by_agent["errors"], by_agent["events"]) == (77, 107)
    assert by_agent["top_errors"] == {"tool_error": 30, "server_error": 25, "timeout": 22}  # counted across subjects
    by_model = found[("error_hotspot", (("model", "m1"),))]["evidence"]  # LLM calls only: not the tool calls
    assert (by_model["errors"], by_model["events"]) == (37, 57)
    assert by_model["top_errors"] == {"timeout": 22, "server_error": 15}


@pytest.mark.parametrize("seed", range(5))
def test_grouped_sums_are_the_floats_and_order_of_a_pass_adding_subject_by_subject(seed):
    rnd = random.Random(seed)
    names = [None, "x", "y", "z", "é"]
    period = Period(300.0)
    for _ in range(rnd.randrange(0, 400)):
        subject = (rnd.choice(["llm.call", "tool.call", "workflow.completed"]), rnd.choice(names), rnd.choice(names), rnd.choice(names))
        period.sums[subject] = [rnd.choice([0.0, 1.0, rnd.random() * 10 ** rnd.randrange(-3, 6)]) for _ in FIELDS]
    for dims in (("agent",), ("model",), ("workflow",), ("agent", "model"), ("type", "agent", "workflow", "model")):
        for types in (None, ("llm.call",), ("tool.call", "workflow.completed"), ("nothing",)):
            idx = [("type", "agent", "workflow", "model").index(d) for d in dims]
            oracle: dict = {}
            for subject, sums in period.sums.items():
                if types is None or subject[0] in types:
                    key = tuple(subject[i] for i in idx)
                    if key in oracle:
                        oracle[key] = [a + b for a, b in zip(oracle[key], sums)]
                    else:
                        oracle[key] = sums[:]
            got = _group_sums(period, dims, types)
            assert list(got) == list(oracle)  # groups in order of their first subject
            assert got == oracle  # the same floats, bit for bit


def test_slow_needs_the_share_above_the_peers_not_just_a_p95():
    now = time.time()
    peers = [{"type": "tool.call", "agent": "b", "duration_ms": 100.0 + i % 10} for i in range(200)]
    slow = [{"type": "tool.call", "agent": "a", "duration_ms": 5000.0 if i < 60 else 100.0} for i in range(200)]
    found = judge(peers + slow, now)
    assert [(f["kind"], f["subject"]) for f in found] == [("slow", {"type": "tool.call", "agent": "a"})]
    assert found[0]["evidence"]["p95_ms"] == 5000.0 and found[0]["evidence"]["samples"] == 200
    assert "5.0 s" in found[0]["summary"]
    # 8% slow calls move the p95 as much, but are not a slow subject
    few_slow = [{"type": "tool.call", "agent": "a", "duration_ms": 5000.0 if i < 16 else 100.0} for i in range(200)]
    assert judge(peers + few_slow, now) == []


def test_events_past_retention_are_ignored_and_late_events_reach_their_bucket():
    now = 1_000_000.0
    config = Config().replace(**SHORT)
    store = InsightsStore(config.insights, clock=lambda: now)
    decoder = EventDecoder(max_clock_skew=math.inf)

    def send(ts: float, n: int) -> None:
        lines = [json.dumps({"type": "tool.call", "agent": "a", "timestamp": ts, "duration_ms": 7.0}).encode()] * n
        events, _, _ = decoder.decode(lines, now)
        store.consume(Batch(events, lines, now, "test"))

    send(now - 3601, 5)  # older than insights.retention: not even stored
    assert store.buckets == {}
    send(now - 100, 3)
    store.maintain(now)
    store.maintain(now)  # a maintain period without writes: past buckets are frozen into arrays
    assert store.buckets[int((now - 100) // 10)].frozen
    assert store.snapshot(300.0, 1200.0).window.sums[("tool.call", "a", None, None)][0] == 3  # and remembers their sums
    send(now - 100, 2)  # late, into a frozen bucket: a thawed copy replaces it, the remembered sums are stale
    store.maintain(now)
    store.maintain(now)  # frozen again, as a new bucket
    assert store.buckets[int((now - 100) // 10)].frozen
    snap = store.snapshot(300.0, 1200.0)
    assert snap.window.sums[("tool.call", "a", None, None)][0] == 5
    assert len(snap.window.durations[("tool.call", "a", None, None)]) == 5
    assert snap.baseline.sums == {}


def test_a_bucket_a_late_sender_keeps_writing_is_not_frozen_and_thawed_each_second():
    # A sender 30 s behind writes a past bucket with every batch: frozen at every maintain, it was
    # thawed again by the next batch, copying all of its durations each time.
    clock = FakeClock(1_000_000.0)
    store = InsightsStore(Config().replace(**SHORT).insights, clock=clock)
    decoder = EventDecoder(max_clock_skew=math.inf)
    index = int((clock() - 30) // 10)
    for second in range(5):
        clock.advance(1)
        lines = [json.dumps({"type": "llm.call", "agent": "a", "duration_ms": 7.0, "timestamp": 10 * index + 5}).encode()] * 100
        events, _, _ = decoder.decode(lines, clock())
        store.consume(Batch(events, lines, clock(), "test"))
        store.maintain(clock())  # files the batch (smaller than FILE_AT, it waited), then freezes what is due
        if second == 0:
            first = store.buckets[index]
        assert store.buckets[index] is first and not first.frozen  # the same list-backed bucket, never copied
    clock.advance(1)
    store.maintain(clock())  # one quiet maintain period: now it is frozen
    assert first.frozen and len(first.durations[("llm.call", "a", None, None)]) == 500


@pytest.mark.parametrize(("seed", "max_subjects", "agents"), [(seed, 6, 3) for seed in range(6)] + [(seed, 150, 300) for seed in range(3)])
def test_batches_filed_in_columns_equal_the_events_filed_one_by_one(seed, max_subjects, agents):
    # The store files a batch with a few numpy calls per bucket; the oracle here files each event
    # as the contract says: its bucket of event time, nothing past retention, a subject past
    # max_subjects counted in `dropped` and otherwise ignored, failures and open runs in batch order.
    # Few subjects: sums by bincount; many subjects and small batches: row by row (np.add.at).
    rng = random.Random(seed)
    clock = FakeClock(1_000_000.0)
    config = Config().replace(**SHORT, **{"insights.max_subjects": max_subjects}).insights
    store = InsightsStore(config, clock=clock)
    decoder = EventDecoder(max_clock_skew=math.inf)
    sums: dict[int, dict] = {}
    durations: dict[int, dict] = {}
    errors: dict[int, dict] = {}
    fails: dict[str, int] = {}
    opened: dict[tuple[str, str], None] = {}
    dropped = 0
    for _ in range(40):
        clock.advance(rng.choice([0, 1, 7]))
        lines = []
        for _ in range(rng.randint(0, 60)):
            t = rng.choice(["llm.call", "tool.call", "agent.invoked", "agent.failed", "workflow.started", "workflow.completed"])
            ev = {"type": t, "agent": rng.choice([*map(str, range(agents)), None]), "model": rng.choice(["m", None]),
                  "timestamp": clock() - rng.choice([0, 0, 0, 15, 40, 3700]), "invocation_id": f"i{rng.randint(0, 9)}",
                  "run_id": f"r{rng.randint(0, 9)}", "success": rng.random() > 0.3}
            for field, value in (("duration_ms", rng.random() * 1000), ("cost_usd", rng.random()), ("input_tokens", rng.randint(0, 99)),
                                 ("output_tokens", rng.randint(0, 99)), ("tokens", rng.randint(0, 99)), ("error", rng.choice(["x", "y"]))):
                if rng.random() < 0.7:
                    ev[field] = value
            lines.append(json.dumps({k: v for k, v in ev.items() if v is not None}).encode())
        events, _, rejected = decoder.decode(lines, clock())
        assert not rejected
        store.consume(Batch(events, lines, clock(), "test"))
        for ev in events:  # the oracle
            if ev.timestamp < clock() - config.retention:
                continue
            index = int(ev.timestamp // config.bucket)
            subject = (ev.type, ev.agent, ev.workflow, ev.model)
            bucket = sums.setdefault(index, {})
            if subject not in bucket and len(bucket) >= config.max_subjects:
                dropped += 1
                continue
            row = bucket.setdefault(subject, [0.0] * 6)
            tokens = [ev.input_tokens, ev.output_tokens, ev.tokens]
            for field, amount in enumerate([1, not ev.success, ev.cost_usd or 0, ev.input_tokens or 0, ev.input_tokens is not None,
                                            sum(n or 0 for n in tokens)]):
                row[field] += amount
            if ev.duration_ms is not None:
                durations.setdefault(index, {}).setdefault(subject, []).append(ev.duration_ms)
            if not ev.success:
                kinds = errors.setdefault(index, {})
                kinds[(subject, ev.error or "unknown")] = kinds.get((subject, ev.error or "unknown"), 0) + 1
                fails[ev.invocation_id] = fails.get(ev.invocation_id, 0) + 1
            kind, attr = ("run", "run_id") if ev.type.startswith("workflow.") else ("invocation", "invocation_id")
            if ev.type in ("agent.invoked", "workflow.started"):
                opened.pop((kind, getattr(ev, attr)), None)
                opened[(kind, getattr(ev, attr))] = None
            elif ev.type in ("agent.failed", "workflow.completed"):
                opened.pop((kind, getattr(ev, attr)), None)
        if rng.random() < 0.3:
            store.maintain(clock())  # past buckets freeze; late events then thaw them
    store.flush()  # small batches wait to be filed together
    assert store.dropped == dropped
    assert dropped > 0 or max_subjects > 6
    assert {key: entry[0] for key, entry in store.fails.items()} == fails
    assert list(store.open) == list(opened)
    assert set(store.buckets) == set(sums)
    for index, bucket in store.buckets.items():
        sealed = bucket
        if not bucket.sealed:
            sealed = bucket.capture()
            sealed.seal()
        keys, table = sealed.rows()
        assert dict(zip(keys, table.tolist())) == {s: pytest.approx(v) for s, v in sums[index].items()}
        assert sealed.durations.keys() == durations.get(index, {}).keys()
        for subject, values in sealed.durations.items():
            assert values.tolist() == durations[index][subject]  # all of them, in arrival order
        assert dict(sealed.errors) == errors.get(index, {})


@pytest.mark.parametrize("subjects", [300, 70_000])
def test_a_sealed_bucket_keeps_each_subjects_durations_in_arrival_order(subjects):
    """`seal` groups the durations by subject with a stable sort of their rows: as 16-bit keys up to
    65,536 subjects (300: past 8 bits), as the rows themselves beyond."""
    import numpy as np

    from sidecar.sinks.insights import _Bucket

    rng = np.random.default_rng(7)
    bucket = _Bucket()
    keys = [("llm.call", f"agent-{i}", None, None) for i in range(subjects)]
    bucket.index = {k: i for i, k in enumerate(keys)}
    expected: dict[tuple, list[float]] = {}
    for _ in range(3):  # batches, each spreading every subject's durations over the others'
        rows = rng.integers(0, subjects, 2 * subjects)
        values = rng.random(len(rows))
        bucket.chunks.append((rows, values))
        for row, value in zip(rows.tolist(), values.tolist()):
            expected.setdefault(keys[row], []).append(value)
    bucket.seal()
    assert {k: v.tolist() for k, v in bucket.durations.items()} == expected


def test_small_batches_wait_to_be_filed_together_and_every_query_sees_them():
    from sidecar.sinks.insights import FILE_AT

    now = 1_000_000.0
    store = InsightsStore(Config().replace(**SHORT).insights, clock=lambda: now)
    decoder = EventDecoder()
    subject = ("llm.call", "a", None, None)

    def send(n: int) -> None:
        lines = [json.dumps({"type": "llm.call", "agent": "a", "duration_ms": 5.0, "timestamp": now - 1}).encode()] * n
        events, _, _ = decoder.decode(lines, now)
        store.consume(Batch(events, lines, now, "test"))

    send(1)
    send(2)
    assert store.buckets == {}  # waiting: a one-event batch would pay the filing's set-up alone
    assert store.snapshot(300.0, 1200.0).window.sums[subject][0] == 3  # a query files them first
    send(1)
    assert store.series(300.0)[1][-1][1].table.sum(axis=0)[0] == 4  # so does /v1/series
    send(1)
    store.maintain(now)  # and the maintain pass, about once a second
    assert not store._waiting
    send(FILE_AT)  # a large batch is filed at once
    assert not store._waiting and len(store.buckets[int((now - 1) // 10)].chunks) == 4


def test_a_query_groups_the_durations_of_a_bucket_still_filling_outside_the_stores_lock(monkeypatch):
    # Grouping sorts every duration of the bucket (300k in a 10 s bucket at 30k events/s): under
    # the lock, the pipeline's next batch would wait for it.
    from sidecar.sinks import insights as store_module

    now = 1_000_000.0
    store = InsightsStore(Config().replace(**SHORT).insights, clock=lambda: now)
    decoder = EventDecoder()
    lines = [json.dumps({"type": "llm.call", "agent": "a", "duration_ms": float(i), "timestamp": now - 1}).encode() for i in range(50)]
    events, _, _ = decoder.decode(lines, now)
    store.consume(Batch(events, lines, now, "test"))
    held = []
    seal = store_module._Bucket.seal

    def watched(bucket):
        held.append(store._lock.locked())
        seal(bucket)

    monkeypatch.setattr(store_module._Bucket, "seal", watched)
    for snap in (store.snapshot(300.0, 1200.0), store.series(300.0)[1][-1][1]):
        durations = snap.window.durations if hasattr(snap, "window") else snap.durations
        assert sorted(durations[("llm.call", "a", None, None)].tolist()) == [float(i) for i in range(50)]
    assert held == [False, False]
    assert not store.buckets[int((now - 1) // 10)].sealed  # the store's own bucket goes on filling


def test_durations_read_as_a_person_reads_them():
    assert [human_ms(v) for v in (850, 8100, 67_900, 118_300, 5_400_000)] == ["850 ms", "8.1 s", "1.1 min", "2.0 min", "1.5 h"]


def test_p95_is_the_nearest_rank_of_stats():
    import numpy as np

    assert p95(np.arange(1, 101, dtype=np.float64)) == 95.0
    assert p95(np.array([3.0])) == 3.0


def test_the_rolled_sums_equal_a_fresh_sum_as_time_passes_and_late_events_arrive():
    clock = FakeClock(1_000_000.0)
    config = Config().replace(**SHORT)
    rolled, fresh = InsightsStore(config.insights, clock=clock), InsightsStore(config.insights, clock=clock)
    decoder = EventDecoder(max_clock_skew=math.inf)
    rng = random.Random(3)
    regressions = 0
    for step in range(200):  # 2000 s: buckets enter the window, move to the baseline, leave; durations step up
        clock.advance(10)
        lines = [json.dumps({"type": rng.choice(["llm.call", "tool.call"]), "agent": rng.choice("ab"), "success": rng.random() > 0.1,
                             "timestamp": clock() - rng.choice([1, 1, 1, 400, 900]), "duration_ms": rng.random() * 100 * (1 + step // 40) ** 2,
                             "cost_usd": 0.01}).encode() for _ in range(rng.randint(0, 30))]
        events, _, _ = decoder.decode(lines, clock())
        for store in (rolled, fresh):
            store.consume(Batch(events, lines, clock(), "test"))
            store.maintain(clock())
        fresh._cache.clear()  # the oracle sums every bucket again
        a, b = rolled.snapshot(300.0, 1200.0), fresh.snapshot(300.0, 1200.0)
        # per-group p95s are reused while the baseline stands; the rules that read durations (exact,
        # unlike rolled float sums) must say the same as with nothing kept
        kept = [f.doc() for f in find(a, config.insights).findings if f.kind in ("slow", "latency_regression")]
        fresh.kept.clear()  # the oracle keeps nothing either
        assert kept == [f.doc() for f in find(b, config.insights).findings if f.kind in ("slow", "latency_regression")]
        regressions += any(f["kind"] == "latency_regression" for f in kept)
        for got, want in ((a.window, b.window), (a.baseline, b.baseline)):
            assert got.sums.keys() == want.sums.keys()
            assert got.errors == want.errors
            for subject, sums in want.sums.items():
                assert got.sums[subject] == pytest.approx(sums)
                assert sorted(got.durations.get(subject, [])) == sorted(want.durations.get(subject, []))
    assert regressions  # the findings compared were not all empty


def abandonment(now: float, window_abandoned: int, baseline_runs: int = 40, watched_early: bool = True) -> list[dict]:
    """Runs of workflow w with lifecycle.abandon_after 6m: in the baseline `baseline_runs`, a tenth of
    them never ended; in the window 30 ended and `window_abandoned` reached 6m without an end."""
    events = [{"type": "tool.call", "agent": "a", "timestamp": now - 1600}] if watched_early else []
    for i in range(baseline_runs):  # ended or abandoned within the baseline (now - 1190 .. now - 290)
        start = now - 1540 + 20 * i
        events.append({"type": "workflow.started", "workflow": "w", "run_id": f"b{i}", "timestamp": start})
        if i % 10:
            events.append({"type": "workflow.completed", "workflow": "w", "run_id": f"b{i}", "timestamp": start + 400})
    for i in range(30):
        start = now - 290 + 5 * i
        events.append({"type": "workflow.started", "workflow": "w", "run_id": f"e{i}", "timestamp": start})
        events.append({"type": "workflow.completed", "workflow": "w", "run_id": f"e{i}", "timestamp": start + 30})
    for i in range(window_abandoned):  # abandoned at now - 290 + 10 i: in the window
        events.append({"type": "workflow.started", "workflow": "w", "run_id": f"a{i}", "timestamp": now - 650 + 10 * i})
    events.sort(key=lambda e: e["timestamp"])
    config = Config().replace(**SHORT)
    store = InsightsStore(config.insights, clock=lambda: now, abandon_after=360.0)
    lines = [json.dumps(e).encode() for e in events]
    decoded, _, rejected = EventDecoder().decode(lines, now)
    assert rejected == []
    store.consume(Batch(decoded, lines, now, "test"))
    store.maintain(now)  # the sweep that finds runs past abandon_after
    return [f.doc() for f in find(store.snapshot(300.0, 1200.0), config.insights).findings]


def test_abandoned_runs_rising_are_stuck_but_a_steady_share_a_small_sample_or_a_short_watch_are_not():
    now = 1_000_000.0
    (finding,) = abandonment(now, window_abandoned=10)
    assert (finding["kind"], finding["severity"], finding["subject"]) == ("stuck", "warning", {"workflow": "w"})
    evidence = finding["evidence"]
    assert (evidence["abandoned"], evidence["runs"], evidence["baseline_abandoned"], evidence["baseline_runs"]) == (10, 40, 4, 40)
    assert evidence["share"] == 0.25 and evidence["baseline_share"] == 0.1 and evidence["abandon_after_ms"] == 360_000
    assert finding["summary"] == "10 runs of workflow w were abandoned (no end within 6.0 min), 25% of its runs against 10% in the baseline."
    assert abandonment(now, window_abandoned=4) == []  # 4 of 34 (12%) against 10%: steady
    assert abandonment(now, window_abandoned=10, baseline_runs=19) == []  # the baseline is below insights.min_runs
    # The store saw its first event less than abandon_after before the baseline began: runs that
    # started unseen would be missing from the baseline's abandonment, so it is not judged.
    assert abandonment(now, window_abandoned=10, watched_early=False) == []


def test_a_healthy_stream_with_a_short_abandon_after_yields_nothing_above_info():
    with running_sidecar(**SHORT, **ABANDON) as sc:
        demo(sc.url, "healthy", *ABANDON_DEMO)
        store = sc.sidecar.sinks.insights
        wait_until(lambda: store.abandoned, "the sweep counted the demo's own abandoned runs (3%)")
        doc = insights(sc.url)
    assert above_info(doc) == []


def test_open_runs_are_grouped_by_subject_and_leave_when_ended_abandoned_or_pushed_out():
    now = 1_000_000.0
    config = Config().replace(**{**SHORT, "insights.max_active": 5})
    store = InsightsStore(config.insights, clock=lambda: now, abandon_after=600.0)
    decoder = EventDecoder()

    def send(*events: dict) -> None:
        lines = [json.dumps(e).encode() for e in events]
        decoded, _, _ = decoder.decode(lines, now)
        store.consume(Batch(decoded, lines, now, "test"))

    def started(run: str, workflow: str, ago: float) -> dict:
        return {"type": "workflow.started", "workflow": workflow, "run_id": run, "timestamp": now - ago}

    send(started("r1", "w1", 700), started("r2", "w1", 100), started("r3", "w2", 50),
         {"type": "agent.invoked", "agent": "a", "invocation_id": "i1", "timestamp": now - 40},
         {"type": "workflow.completed", "workflow": "w1", "run_id": "r2", "timestamp": now - 30},
         started("r3", "w2", 20), started("r4", "w2", 10), started("r5", "w2", 5))  # r3 started again: a new run
    store.maintain(now)  # r1 passed abandon_after
    snap = store.snapshot(300.0, 1200.0)
    assert {k: sorted(v.tolist()) for k, v in snap.open.items()} == {("run", "w2"): [5.0, 10.0, 20.0], ("invocation", "a"): [40.0]}
    assert snap.window.abandoned == {"w1": 1} and snap.exact
    send(started("r6", "w3", 1), started("r7", "w3", 1))  # past insights.max_active (5): the oldest open item goes
    snap = store.snapshot(300.0, 1200.0)
    assert {k: len(v) for k, v in snap.open.items()} == {("run", "w2"): 3, ("run", "w3"): 2}
    assert not snap.exact


def test_past_max_active_the_oldest_open_items_and_failures_go_a_share_at_a_time():
    """At insights.max_active the oldest 1/64 (at least one) leave at once, so that the cap does
    not cost a walk of the dict's front per new item."""
    clock = FakeClock(1_000_000.0)
    store = InsightsStore(Config().replace(**{**SHORT, "insights.max_active": 128}).insights, clock=clock)
    decoder = EventDecoder()

    def send(*events: dict) -> None:
        lines = [json.dumps({"timestamp": clock(), **e}).encode() for e in events]
        decoded, _, _ = decoder.decode(lines, clock())
        store.consume(Batch(decoded, lines, clock(), "test"))
        store.flush()

    send(*({"type": "agent.invoked", "agent": "a", "invocation_id": f"i{i}"} for i in range(128)))
    send(*({"type": "llm.call", "agent": "a", "invocation_id": f"i{i}", "success": False} for i in range(128)))
    assert store.dropped == 0
    send({"type": "agent.invoked", "agent": "a", "invocation_id": "i128"}, {"type": "llm.call", "agent": "a", "invocation_id": "i128", "success": False})
    assert store.dropped == 4  # two open items and two failure counts
    assert [ident for _, ident in store.open] == [f"i{i}" for i in range(2, 129)]
    assert list(store.fails) == [f"i{i}" for i in range(2, 129)]
    send({"type": "agent.invoked", "agent": "a", "invocation_id": "i129"})  # room left by the share
    assert store.dropped == 4 and len(store.open) == 128


def test_a_batch_is_numbered_when_consumed_not_when_filed():
    """As the metrics sink does (tests/sinks/test_metrics.py): a query's thread may file it."""
    store = InsightsStore(Config().replace(**SHORT).insights, clock=lambda: 1_000_000.0)
    line = json.dumps({"type": "x", "agent": "a", "timestamp": 1_000_000.0}).encode()
    decoded, _, _ = EventDecoder().decode([line], 1_000_000.0)
    batch = Batch(decoded, [line], 1_000_000.0, "test")
    store.consume(batch)
    assert store._waiting and batch.label_sets is not None and batch.label_sets.owner is store.label_sets


def test_failure_counts_are_forgotten_once_past_retention():
    clock = FakeClock(1_000_000.0)
    config = Config().replace(**SHORT).insights
    store = InsightsStore(config, clock=clock)
    decoder = EventDecoder()
    for ident in ("old", "new"):
        line = json.dumps({"type": "llm.call", "agent": "a", "invocation_id": ident, "success": False, "timestamp": clock()}).encode()
        decoded, _, _ = decoder.decode([line], clock())
        store.consume(Batch(decoded, [line], clock(), "test"))
        clock.advance(100)
    store.maintain(clock())
    assert list(store.fails) == ["old", "new"]
    clock.advance(config.retention - 150)  # "old" failed retention + 50 s ago, "new" retention - 50 s ago
    store.maintain(clock())
    assert list(store.fails) == ["new"]


def tracked_objects(root: object) -> int:
    """Objects the garbage collector tracks that `root` holds (not following code, modules or types)."""
    import gc
    import types

    seen: set[int] = set()
    stack, count = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType, types.MethodType)):
            continue
        seen.add(id(obj))
        count += gc.is_tracked(obj)
        stack.extend(gc.get_referents(obj))
    return count


def test_an_hour_of_state_holds_few_objects_for_the_garbage_collector():
    # A full collection walks every tracked object while it holds the GIL: at 1M samples the store's
    # per-bucket sum lists and per-invocation failure lists made it ~300 ms, the slow 1% of queries.
    import gc

    clock = FakeClock(1_000_000.0)
    config = Config().replace(**SHORT)
    store = InsightsStore(config.insights, clock=clock)
    decoder = EventDecoder(max_clock_skew=math.inf)
    for step in range(100):  # 1000 s, 100 buckets; 20 subjects and 50 failing invocations each
        clock.advance(10)
        lines = [json.dumps({"type": "llm.call", "agent": f"a{i % 20}", "invocation_id": f"i{step}-{i}", "success": False,
                             "error": "server_error", "duration_ms": 5.0, "timestamp": clock() - 1}).encode() for i in range(50)]
        events, _, _ = decoder.decode(lines, clock())
        store.consume(Batch(events, lines, clock(), "test"))
        store.maintain(clock())
    gc.collect()  # tuples of plain values stop being tracked at a collection; a tuple holding one
    gc.collect()  # that was still tracked when the collection reached it, at the next
    assert len(store.fails) == 5000 and len(store.buckets) == 100
    assert tracked_objects(store) < 1500  # O(buckets), not O(failures) or O(buckets x subjects)
