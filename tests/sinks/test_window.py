"""The window sink against a brute-force oracle: sort the events in the window and read them off."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sidecar.config import Config, WindowsConfig
from sidecar.protocol import is_failure_type
from sidecar.sinks.window import store as window_mod
from sidecar.sinks.window import SortedValues, WindowSink, nearest_rank
from sidecar.testing import FakeClock
from sidecar.types import Batch, Event

DURATIONS = (60.0, 300.0, 900.0, 3600.0)
TYPES = ("llm.call", "tool.call", "agent.failed")
AGENTS = (None, "planner", "coder")
WORKFLOWS = (None, "review")
MODELS = (None, "gpt-4o", "claude")
RUNS = (None, "r1", "r2", "r3")


def make_event(ts: float, type_: str, agent, workflow, model, run, dur, tin, tout, tother, cost, severity) -> Event:
    failed = is_failure_type(type_)
    return Event(
        type=type_, timestamp=ts, agent=agent, workflow=workflow, model=model, run_id=run, duration_ms=dur,
        input_tokens=tin, output_tokens=tout, tokens=tother, cost_usd=cost,
        severity=severity or ("error" if failed else "info"), success=not failed,
    )


def batch(events: list[Event], now: float) -> Batch:
    return Batch(events, [b"{}"] * len(events), now, "test")


# -- the oracle ---------------------------------------------------------------

def oracle_quantile(sorted_values: list[float], percent: int):
    """Nearest rank by its definition: the smallest value with at least q*n values <= it."""
    n = len(sorted_values)
    for v in sorted_values:
        if sum(1 for x in sorted_values if x <= v) * 100 >= percent * n:
            return v
    return None


def oracle_doc(events: list[Event], seconds: float, runs: bool = True) -> dict:
    durs = sorted(e.duration_ms for e in events if e.duration_ms is not None)
    tin = sum(e.input_tokens or 0 for e in events)
    tout = sum(e.output_tokens or 0 for e in events)
    total = tin + tout + sum(e.tokens or 0 for e in events)
    cost = float(sum(e.cost_usd or 0.0 for e in events))
    errors = sum(1 for e in events if not e.success)
    by_type: dict[str, int] = {}
    by_sev: dict[str, int] = {}
    for e in events:
        by_type[e.type] = by_type.get(e.type, 0) + 1
        by_sev[e.severity] = by_sev.get(e.severity, 0) + 1
    doc = {
        "events": len(events),
        "events_by_type": by_type,
        "events_by_severity": by_sev,
        "errors": errors,
        "error_rate": errors / len(events) if events else None,
        "duration_ms": {
            "count": len(durs), "sum": float(sum(durs)), "avg": sum(durs) / len(durs) if durs else None,
            "min": durs[0] if durs else None, "max": durs[-1] if durs else None,
            **{f"p{p}": oracle_quantile(durs, p) for p in (50, 90, 95, 99)},
        },
        "tokens": {"input": tin, "output": tout, "total": total},
        "cost_usd": cost,
        "rates": {
            "events_per_second": len(events) / seconds if seconds > 0 else None,
            "tokens_per_second": total / seconds if seconds > 0 else None,
            "cost_per_hour_usd": cost / seconds * 3600 if seconds > 0 else None,
        },
        "agents_active": len({e.agent for e in events if e.agent is not None}),
    }
    if runs:
        doc["runs_seen"] = doc["workflows_active"] = len({e.run_id for e in events if e.run_id is not None})
    return doc


def oracle_groups(events: list[Event], by: str, seconds: float, limit: int, runs: bool = True) -> list[dict]:
    groups: dict = {}
    for e in events:
        groups.setdefault(getattr(e, by if by != "workflow" else "workflow"), []).append(e)
    order = sorted(groups, key=lambda k: (-len(groups[k]), str(k)))
    return [{"key": k, **oracle_doc(groups[k], seconds, runs)} for k in order[:limit]]


def assert_same(got, want, path: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        for k, v in want.items():
            assert k in got, f"{path}.{k} missing"
            assert_same(got[k], v, f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def in_window(events: list[Event], now: float, seconds: float, **filters) -> list[Event]:
    return [
        e for e in events
        if e.timestamp >= now - seconds and all(getattr(e, k) == v for k, v in filters.items())
    ]


# -- the property test ----------------------------------------------------------

# Offsets from "now" that land exactly on, just inside and just outside each window edge.
EDGES = [-d + eps for d in DURATIONS for eps in (0.0, 1e-6, -1e-6)]
offsets = st.one_of(st.sampled_from(EDGES + [0.0, 5.0, -4000.0]), st.floats(-3700, 10, allow_nan=False))
events_st = st.tuples(
    offsets,
    st.sampled_from(TYPES), st.sampled_from(AGENTS), st.sampled_from(WORKFLOWS), st.sampled_from(MODELS), st.sampled_from(RUNS),
    st.one_of(st.none(), st.sampled_from([0.0, 1.0, 1.5, 100.0]), st.floats(0, 1e5, allow_nan=False)),
    st.one_of(st.none(), st.integers(0, 10_000)), st.one_of(st.none(), st.integers(0, 10_000)),
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), st.sampled_from([0.0, 0.01, 0.25])),
    st.sampled_from([None, None, "debug", "warning", "critical"]),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.lists(events_st, min_size=0, max_size=12)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1e-6, 59.0, 60.0, 299.0, 900.0, 3600.0])),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=steps)
def test_every_field_of_every_window_and_breakdown_matches_the_oracle(small_structures, steps):
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(durations=DURATIONS, cumulative_samples=10_000, index_by=("agent", "type")), None, clock)
    seen: list[Event] = []
    late = 0
    for kind, arg in steps:
        if kind == "advance":
            clock.advance(arg)
            sink.maintain(clock())
            continue
        evs = [make_event(clock.now + off, *rest) for off, *rest in arg]
        late += sum(1 for e in evs if e.timestamp < clock.now - DURATIONS[-1])
        sink.consume(batch(evs, clock.now))
        seen += evs
        now = clock.now
        full = sink.stats()
        for w in DURATIONS:
            name = sink.find_window(str(w)).name
            window = in_window(seen, now, w)
            assert_same(full["windows"][name], oracle_doc(window, w), f"{name}")
            assert full["windows"][name]["exact"] is True
            assert_same(sink.stats(name, {"agent": "planner"}), oracle_doc(in_window(seen, now, w, agent="planner"), w), f"{name}/planner")
            assert_same(sink.stats(name, {"type": "tool.call"}), oracle_doc(in_window(seen, now, w, type="tool.call"), w), f"{name}/tool")
            assert_same(sink.stats(name, {"workflow": "review"}), oracle_doc(in_window(seen, now, w, workflow="review"), w), f"{name}/review")
            got = sink.stats(name, {"model": "gpt-4o"}, by="type", limit=2)
            want = in_window(seen, now, w, model="gpt-4o")
            assert_same(got, oracle_doc(want, w) | {"by": "type"}, f"{name}/gpt-4o")
            assert_same(got["groups"], oracle_groups(want, "type", w, 2), f"{name}/gpt-4o/by type")
        for by in ("agent", "workflow", "model"):
            got = sink.stats("5m", by=by)
            assert_same(got["groups"], oracle_groups(in_window(seen, now, 300.0), by, 300.0, 50), f"5m/by {by}")
        cumulative = full["cumulative"]
        assert cumulative["exact"] is True
        assert_same(cumulative, oracle_doc(seen, now - sink.started, runs=False), "cumulative")
        assert_same(sink.stats(by="agent")["cumulative"]["groups"], oracle_groups(seen, "agent", now - sink.started, 50, runs=False))
        assert sink.late == late


# -- focused cases --------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.lists(st.sampled_from([0.0, 1.0, 2.0, 2.0, 3.5, 7.0, 1e6]), max_size=8)),
        max_size=30,
    ),
    fold_min=st.sampled_from([0, 3, 100]),
)
def test_sorted_values_selects_exact_ranks_through_adds_removes_and_folds(ops, fold_min):
    live: list[float] = []
    sv = type("SmallFold", (SortedValues,), {"__slots__": (), "FOLD_MIN": fold_min})()
    for is_add, values in ops:
        if is_add:
            live += values
            sv.add(np.array(values))
        else:
            gone = []
            for v in values:
                if v in live:
                    live.remove(v)
                    gone.append(v)
            sv.remove(np.array(gone))
        sv.maybe_fold()
        assert len(sv) == len(live)
        if live:
            ranks = np.arange(1, len(live) + 1)
            assert sv.select(ranks).tolist() == sorted(live)


@pytest.mark.parametrize(("percent", "n", "rank"), [(50, 1, 1), (50, 2, 1), (50, 3, 2), (90, 10, 9), (99, 100, 99), (99, 101, 100), (95, 20, 19), (1, 1000, 10)])
def test_nearest_rank_is_the_ceiling_of_q_times_n(percent, n, rank):
    assert nearest_rank(percent, n) == rank


def test_empty_window_has_null_statistics_and_zero_counts():
    sink = WindowSink(WindowsConfig(), None, FakeClock())
    doc = sink.stats("5m")
    assert doc["events"] == 0 and doc["errors"] == 0 and doc["error_rate"] is None
    assert doc["duration_ms"] == {"count": 0, "sum": 0.0, "avg": None, "min": None, "max": None, "p50": None, "p90": None, "p95": None, "p99": None}
    assert doc["window"] == "5m" and doc["window_seconds"] == 300 and doc["exact"] is True
    assert doc["as_of"] == "2026-09-21T14:13:20.000Z"


def test_event_exactly_at_the_window_edge_is_inside_until_the_clock_moves_on():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    sink.consume(batch([make_event(clock.now - 60.0, "llm.call", None, None, None, None, 5.0, None, None, None, None, None)], clock.now))
    assert sink.stats("1m")["events"] == 1
    clock.advance(1e-3)
    assert sink.stats("1m")["events"] == 0
    assert sink.stats("5m")["events"] == 1


def test_events_older_than_the_largest_window_are_ignored_and_counted_late():
    clock = FakeClock()
    registry = CollectorRegistry()
    sink = WindowSink(WindowsConfig(), registry, clock)
    old = make_event(clock.now - 3601, "llm.call", "a", None, None, "r9", 5.0, None, None, None, None, None)
    sink.consume(batch([old], clock.now))
    assert sink.stats("1h")["events"] == 0
    assert sink.stats()["cumulative"]["events"] == 1
    assert registry.get_sample_value("sidecar_window_late_events_total") == 1
    assert "r9" not in sink.store.run_ids  # the run id it brought is forgotten again


def test_collector_exports_exact_quantile_gauges_in_seconds():
    clock = FakeClock()
    registry = CollectorRegistry()
    sink = WindowSink(WindowsConfig(), registry, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", "a", None, None, None, float(ms), None, None, None, None, None) for ms in range(1, 101)], clock.now))
    assert registry.get_sample_value("agent_window_duration_seconds", {"window": "5m", "quantile": "0.99"}) == 0.099
    assert registry.get_sample_value("agent_window_duration_seconds", {"window": "1m", "quantile": "0.5"}) == 0.05
    assert registry.get_sample_value("agent_window_events", {"window": "1h"}) == 100
    assert registry.get_sample_value("sidecar_window_samples", {"window": "1h"}) == 100
    clock.advance(3600.001)
    assert registry.get_sample_value("agent_window_events", {"window": "1h"}) == 0
    assert math.isnan(registry.get_sample_value("agent_window_duration_seconds", {"window": "1h", "quantile": "0.9"}))


def test_past_max_samples_counts_stay_exact_and_quantiles_say_they_are_sampled():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(max_samples=1000, index_by=("agent",)), None, clock)
    rng = np.random.default_rng(1)
    values = rng.random(10_000) * 1000
    sink.consume(batch([make_event(clock.now - i * 0.01, "llm.call", "a", None, None, None, float(v), None, None, None, None, None) for i, v in enumerate(values)], clock.now))
    doc = sink.stats("1h")
    assert doc["exact"] is False
    assert doc["events"] == 10_000 and doc["duration_ms"]["count"] == 10_000
    assert math.isclose(doc["duration_ms"]["sum"], values.sum())
    assert 0 < doc["sample_size"] <= 1000
    assert abs(doc["duration_ms"]["p50"] - 500) < 100  # a uniform sample, not the exact value
    assert sink.stats()["windows"]["1m"]["exact"] is False
    by_index = sink.stats("1h", {"agent": "a"})
    assert by_index["exact"] is False and by_index["sample_size"] == doc["sample_size"]
    assert by_index["duration_ms"]["p50"] == doc["duration_ms"]["p50"]  # all events are agent a
    assert sink.stats("1h", {"agent": "nobody"})["duration_ms"]["p50"] is None
    clock.advance(3600.001)  # everything leaves: back to exact
    assert sink.stats("1h")["exact"] is True


def test_cumulative_quantiles_come_from_a_reservoir_once_it_is_full():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(cumulative_samples=100), None, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", "a", None, None, None, float(i), None, None, None, None, None) for i in range(1000)], clock.now))
    doc = sink.stats()["cumulative"]
    assert doc["exact"] is False and doc["sample_size"] == 100
    assert doc["duration_ms"]["count"] == 1000 and doc["duration_ms"]["sum"] == sum(range(1000))
    assert sink.stats("1m")["exact"] is True


def test_more_than_max_keys_combinations_fold_into_overflow_keys_that_keep_errors_exact(monkeypatch):
    monkeypatch.setattr(window_mod, "MAX_KEYS", 13)  # room for 3 keys before the 10 overflow ones
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    evs = [make_event(clock.now, "llm.call", f"a{i}", None, None, None, 1.0, None, None, None, None, None) for i in range(6)]
    evs.append(make_event(clock.now, "agent.failed", "a9", None, None, None, None, None, None, None, None, None))
    sink.consume(batch(evs, clock.now))
    sink.flush()
    sink.consume(batch(evs[4:5], clock.now))  # a folded label set again, filed apart: counted again
    doc = sink.stats("1m", by="agent")
    assert doc["events"] == 8 and doc["errors"] == 1 and doc["events_by_severity"] == {"info": 7, "error": 1}
    assert {g["key"]: g["events"] for g in doc["groups"]} == {"__overflow__": 5, "a0": 1, "a1": 1, "a2": 1}
    registry = CollectorRegistry()
    registry.register(sink)
    assert registry.get_sample_value("sidecar_window_overflow_events_total") == 5


def test_large_token_counts_are_clamped_to_the_column_width():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", None, None, None, None, None, 2**40, None, None, None, None)], clock.now))
    assert sink.stats("1m")["tokens"]["input"] == 2**32 - 1


def test_a_clock_that_steps_back_does_not_readmit_evicted_events():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", None, None, None, None, 1.0, None, None, None, None, None)], clock.now))
    clock.advance(61)
    assert sink.stats("1m")["events"] == 0
    clock.advance(-30)
    assert sink.stats("1m")["events"] == 0


def test_window_is_found_by_name_or_by_any_spelling_of_its_duration():
    sink = WindowSink(Config().windows, None, FakeClock())
    assert sink.find_window("5m").name == "5m"
    assert sink.find_window("300s").name == "5m"
    assert sink.find_window("300").name == "5m"
    assert sink.find_window("7m") is None
    assert sink.find_window("soon") is None


def test_many_keys_and_run_ids_grow_every_table_and_stay_exact():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    evs = [make_event(clock.now - (i % 100), "llm.call", f"agent{i % 150}", None, None, f"run{i}", float(i), 1, None, None, None, None) for i in range(3000)]
    sink.consume(batch(evs, clock.now))
    sink.flush()
    doc = sink.stats("1m", by="agent", limit=500)
    inside = [e for e in evs if e.timestamp >= clock.now - 60]
    assert doc["events"] == len(inside) and doc["workflows_active"] == len(inside)
    assert doc["agents_active"] == 150 and len(doc["groups"]) == 150
    assert doc["tokens"]["input"] == len(inside)
    clock.advance(100)
    assert sink.stats("1h")["workflows_active"] == 3000
    clock.advance(3600)
    assert sink.stats("1h")["workflows_active"] == 0
    assert sink.store.run_ids == {None: -1}  # every run id left the largest window and was released


def test_sampled_groups_report_their_sample_size():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(max_samples=100), None, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", "a" if i % 2 else "b", None, None, None, float(i), None, None, None, None, None) for i in range(1000)], clock.now))
    doc = sink.stats("1m", by="agent")
    assert doc["exact"] is False
    assert all(g["duration_ms"]["count"] == 500 and 0 < g["sample_size"] < 500 for g in doc["groups"])


@pytest.mark.parametrize("seed", range(5))
def test_sorted_values_select_matches_a_full_sort_on_large_random_multisets(seed):
    rng = np.random.default_rng(seed)
    base = np.round(rng.random(20_000) * 500)  # many ties
    sv = SortedValues(base)
    added = np.round(rng.random(3000) * 600)
    removed = np.concatenate((rng.choice(base, 1500, replace=False), added[:200]))
    sv.add(added)
    sv.remove(removed)
    live = list(base) + list(added)
    for v in removed:
        live.remove(v)
    want = np.sort(np.array(live))
    ranks = np.concatenate((np.arange(1, 50), rng.integers(1, len(want) + 1, 500), np.arange(len(want) - 50, len(want) + 1)))
    assert np.array_equal(sv.select(ranks), want[ranks - 1])


def test_prometheus_by_agent_exports_each_agents_exact_quantiles_beside_the_whole_window():
    clock = FakeClock()
    registry = CollectorRegistry()
    sink = WindowSink(WindowsConfig(prometheus_by=("agent",), prometheus_by_limit=2), registry, clock)
    evs = [make_event(clock.now, "llm.call", agent, None, None, None, float(ms), None, None, None, None, None)
           for agent, values in (("a", range(1, 101)), ("b", range(1000, 1010)), ("c", [5.0]), (None, [7.0])) for ms in values]
    sink.consume(batch(evs, clock.now))
    value = registry.get_sample_value
    assert value("agent_window_duration_seconds", {"window": "1m", "quantile": "0.9", "agent": "a"}) == 0.09
    assert value("agent_window_duration_seconds", {"window": "1m", "quantile": "0.5", "agent": "b"}) == 1.004
    assert value("agent_window_events", {"window": "1m", "agent": "a"}) == 100
    assert value("agent_window_events", {"window": "1m", "agent": ""}) == 112  # the whole window
    assert value("agent_window_events", {"window": "1m", "agent": "c"}) is None  # beyond prometheus_by_limit


def test_prometheus_by_names_only_known_fields():
    from sidecar.config import config_from_dict
    from sidecar.exceptions import ConfigError

    with pytest.raises(ConfigError, match="windows.prometheus_by: unknown field 'region'"):
        config_from_dict({"windows": {"prometheus_by": ["agent", "region"]}})


def test_stored_events_are_bounded_by_max_events_and_the_answer_says_it_is_not_exact():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(max_events=1000), None, clock)
    for i in range(5):  # 5000 events over 50 s: the 1h window would need them all
        events = [make_event(clock.now - 10 + j / 100, "llm.call", "a", None, None, None, 5.0, None, None, None, None, None) for j in range(1000)]
        sink.consume(batch(events, clock.now))
        clock.advance(10)
        sink.maintain(clock.now)
    assert sink.store.tail - sink.store.head <= 2000  # at most max_events plus what arrived since the last flush
    doc = sink.stats("1h")
    assert doc["exact"] is False and doc["events"] <= 2000
    assert sink.stats("1m")["exact"] is False
    small = WindowSink(WindowsConfig(), None, clock)
    small.consume(batch([make_event(clock.now, "llm.call", "a", None, None, None, 5.0, None, None, None, None, None)], clock.now))
    assert small.stats("1h")["exact"] is True


# -- issue 13/14: names, bounds, finite sums ---------------------------------------

def test_since_start_runs_seen_counts_a_run_that_leaves_every_window_and_returns_once():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", "a", None, None, "r1", 1.0, None, None, None, None, None)], clock.now))
    clock.advance(3601)
    sink.maintain(clock.now)
    assert "r1" not in sink.store.run_ids  # released: it left the largest window
    sink.consume(batch([make_event(clock.now, "llm.call", "a", None, None, run, 1.0, None, None, None, None, None) for run in ("r1", "r2")], clock.now))
    cumulative = sink.stats()["cumulative"]
    assert cumulative["runs_seen"] == 2 and cumulative["workflows_active"] == 2  # r1 once, r2
    assert sink.stats("1h")["runs_seen"] == 2


amounts = st.floats(min_value=0, max_value=1.7976931348623157e308, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(amounts, amounts, st.sampled_from(AGENTS)), min_size=1, max_size=6))
def test_no_finite_amounts_make_any_sum_or_rate_unrepresentable_in_json(values):
    import json

    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", agent, None, None, "r", dur, None, None, None, cost, None) for dur, cost, agent in values], clock.now))
    for doc in (sink.stats(), sink.stats(by="agent"), sink.stats("1m", {"agent": "planner"}), sink.stats("1h", by="model")):
        json.dumps(doc, allow_nan=False)  # raises on inf or NaN anywhere
    whole = sink.stats("1m")
    assert math.isfinite(whole["cost_usd"]) and math.isfinite(whole["duration_ms"]["sum"])


def test_strings_are_kept_cut_to_the_label_length_and_filters_on_the_full_value_still_match():
    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    long_agent, long_run, long_type = "a" * 100_000, "r" * 100_000, "t" * 100_000
    sink.consume(batch([make_event(clock.now, long_type, long_agent, "w" * 5000, "m" * 5000, long_run, 1.0, None, None, None, None, None)] * 3, clock.now))
    store = sink.store
    assert all(len(v) <= 128 for names in store.keys.names.values() for v in names if v is not None)
    assert all(len(s) <= 128 for combo in store.keys.ids for s in combo if isinstance(s, str))
    assert all(len(r) <= 128 for r in store.run_ids if r is not None)
    assert sink.stats("1m", {"agent": long_agent[:128]})["events"] == 3
    assert sink.stats("1m", by="type")["groups"][0]["key"] == long_type[:128]
    assert sink.stats("1m")["runs_seen"] == 1  # the long run id counts, under its first 128 characters
    sink.consume(batch([make_event(clock.now, "x", None, None, None, long_run + "-2", 1.0, None, None, None, None, None)], clock.now))
    assert sink.stats("1m")["runs_seen"] == 1  # the same 128 characters: the same run


def test_events_by_type_lists_the_most_frequent_types_and_counts_the_rest():
    from sidecar.sinks.window.query import MAX_TYPES

    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    evs = [make_event(clock.now, f"type{i:03d}", "a", None, None, None, None, None, None, None, None, None) for i in range(MAX_TYPES + 10) for _ in range(1 + (i < 5))]
    sink.consume(batch(evs, clock.now))
    doc = sink.stats("1m")
    assert len(doc["events_by_type"]) == MAX_TYPES
    assert all(doc["events_by_type"][f"type{i:03d}"] == 2 for i in range(5))  # the most frequent first
    assert doc["events_by_type_omitted"] == {"types": 10, "events": 10}
    assert sum(doc["events_by_type"].values()) + doc["events_by_type_omitted"]["events"] == doc["events"]
    assert sink.stats("1m", by="agent")["groups"][0]["events_by_type_omitted"]["types"] == 10


def test_groups_past_the_limit_are_counted_not_listed():
    from sidecar.sinks.window.query import MAX_LIMIT

    clock = FakeClock()
    sink = WindowSink(WindowsConfig(), None, clock)
    sink.consume(batch([make_event(clock.now, "llm.call", f"agent{i}", None, None, None, 1.0, None, None, None, None, None) for i in range(MAX_LIMIT + 7)], clock.now))
    doc = sink.stats("1m", by="agent", limit=10**9)  # the route refuses it; the sink caps it too
    assert len(doc["groups"]) == MAX_LIMIT and doc["groups_omitted"] == 7
    assert sink.stats("1m", by="agent", limit=3)["groups_omitted"] == MAX_LIMIT + 4
    assert sink.stats(by="agent", limit=5)["cumulative"]["groups_omitted"] == MAX_LIMIT + 2
