import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from sidecar.config import Config
from sidecar.protocol import EventDecoder
from sidecar.sinks.metrics import MetricsSink, exemplar_chars
from sidecar.testing import event as tool_event
from sidecar.types import Batch

T0 = 1_790_000_000.0


def make(**changes):
    config = Config().replace(**changes) if changes else Config()
    registry = CollectorRegistry()
    return MetricsSink(config.metrics, config.lifecycle, registry), registry


def feed(sink, *events, now=T0):
    lines = [json.dumps(e).encode() for e in events]
    evs, raws, rejected = EventDecoder().decode(lines, now)
    assert not rejected, rejected
    sink.consume(Batch(evs, raws, now, "test"))


def test_events_are_counted_by_type_agent_workflow_and_severity():
    sink, reg = make()
    feed(sink, {"type": "llm.call", "agent": "planner", "workflow": "wf"}, {"type": "llm.call", "agent": "planner", "workflow": "wf"})
    feed(sink, {"type": "agent.failed", "agent": "coder"})
    assert reg.get_sample_value("agent_events_total", {"type": "llm.call", "agent": "planner", "workflow": "wf", "severity": "info"}) == 2
    assert reg.get_sample_value("agent_events_total", {"type": "agent.failed", "agent": "coder", "workflow": "", "severity": "error"}) == 1


def test_durations_fill_histogram_buckets_in_seconds():
    sink, reg = make()
    feed(sink, *({"type": "tool.call", "agent": "a", "duration_ms": ms} for ms in (10, 50, 51, 1000, 700_000)))
    labels = {"type": "tool.call", "agent": "a", "workflow": ""}
    bucket = lambda le: reg.get_sample_value("agent_event_duration_seconds_bucket", {**labels, "le": le})  # noqa: E731
    assert [bucket("0.05"), bucket("0.1"), bucket("1.0"), bucket("600.0"), bucket("+Inf")] == [2, 3, 4, 4, 5]
    assert reg.get_sample_value("agent_event_duration_seconds_count", labels) == 5
    assert reg.get_sample_value("agent_event_duration_seconds_sum", labels) == pytest.approx(701.111)


def test_custom_buckets_are_used():
    sink, reg = make(**{"metrics.duration_buckets": [1, 2]})
    feed(sink, {"type": "x", "duration_ms": 1500})
    assert reg.get_sample_value("agent_event_duration_seconds_bucket", {"type": "x", "agent": "", "workflow": "", "le": "1.0"}) == 0
    assert reg.get_sample_value("agent_event_duration_seconds_bucket", {"type": "x", "agent": "", "workflow": "", "le": "2.0"}) == 1


TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def exemplars_in(reg):
    """(le, exemplar) for every bucket with an exemplar, through the OpenMetrics parser (which
    refuses a label set over 128 characters, as Prometheus does)."""
    text = generate_openmetrics(reg).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["agent_event_duration_seconds"].samples
    return [(s.labels["le"], s.exemplar) for s in samples if s.name.endswith("_bucket") and s.exemplar]


def test_w3c_trace_and_span_ids_become_an_exemplar_in_openmetrics():
    sink, reg = make()
    feed(sink, {"type": "llm.call", "agent": "a", "duration_ms": 120, "trace_id": "1" * 32, "timestamp": T0 - 5})
    feed(sink, {"type": "llm.call", "agent": "a", "duration_ms": 130, "trace_id": TRACE, "span_id": SPAN})
    [(le, exemplar)] = exemplars_in(reg)
    assert le == "0.25"
    assert exemplar.labels == {"trace_id": TRACE, "span_id": SPAN} and exemplar.value == 0.13
    assert "# {" not in generate_latest(reg).decode()  # the classic text format has no exemplars


HOSTILE_IDS = [
    "t-1",
    TRACE + "\x00",
    TRACE[:31] + "\n",
    "\x7f" * 32,
    TRACE.upper(),
    "0" * 32,
    "\ud7ff" * 32,
    "a" * 33,
    "f" * 200,  # hex, but with the label name far over OpenMetrics' 128 characters
    'q"uote\\' * 20,
]


@pytest.mark.parametrize("trace_id", HOSTILE_IDS)
def test_an_id_that_is_not_w3c_stays_out_of_the_exemplar_and_the_event_still_counts(trace_id):
    sink, reg = make()
    feed(sink, {"type": "llm.call", "agent": "a", "duration_ms": 120, "trace_id": trace_id, "span_id": trace_id[:16]})
    assert exemplars_in(reg) == []
    assert reg.get_sample_value("agent_event_duration_seconds_count", {"type": "llm.call", "agent": "a", "workflow": ""}) == 1
    assert reg.get_sample_value("sidecar_exemplar_ids_ignored_total", {"reason": "invalid_trace"}) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from([TRACE, "1" * 32, "abc", None, *HOSTILE_IDS]),
    st.sampled_from([SPAN, "2" * 16, "x" * 200, None, "0" * 16]),
    st.sampled_from([5, 120, 120, 4000]),
), min_size=1, max_size=8))
def test_a_batch_keeps_the_exemplars_and_counts_that_its_events_one_by_one_would(items):
    """The sink checks a batch's ids at once and falls back to one by one: either way the same."""
    events = [{"type": "llm.call", "agent": "a", "duration_ms": d, **({"trace_id": t} if t else {}), **({"span_id": sp} if sp else {})}
              for t, sp, d in items]
    together, reg_together = make()
    feed(together, *events)
    apart, reg_apart = make()
    for e in events:
        feed(apart, e)
        apart.flush()  # each event added on its own, not waiting for the others (FILE_AT)
    assert exemplars_in(reg_together) == exemplars_in(reg_apart)
    for reason in ("invalid_trace", "invalid_span"):
        labels = {"reason": reason}
        assert reg_together.get_sample_value("sidecar_exemplar_ids_ignored_total", labels) == reg_apart.get_sample_value(
            "sidecar_exemplar_ids_ignored_total", labels)


def random_events(rnd, n):
    """Events over a few label sets, with every field the sink counts, repeats of one series and
    bucket within a batch, lifecycles and over-long labels."""
    out = []
    for i in range(n):
        t = rnd.choice(["llm.call", "tool.call", "workflow.started", "workflow.completed", "workflow.failed", "agent.invoked",
                        "agent.completed", "agent.failed"])
        e = {"type": t, "agent": rnd.choice(["a", "b", "c" * 200]), "workflow": rnd.choice(["w", "v", None]), "timestamp": T0 + i,
             "model": rnd.choice(["m", None]), "run_id": f"r{rnd.randrange(6)}", "invocation_id": f"i{rnd.randrange(6)}"}
        if rnd.random() < 0.8:
            e["duration_ms"] = rnd.choice([0, 5, 120, 120, 4000, 10**7])
        if rnd.random() < 0.7:
            e["trace_id"] = rnd.choice([TRACE, "1" * 32, "abc"])
        if rnd.random() < 0.3:
            e["span_id"] = rnd.choice([SPAN, "x" * 40])
        for field in ("input_tokens", "output_tokens", "tokens"):
            if rnd.random() < 0.5:
                e[field] = rnd.randrange(0, 5000)
        if rnd.random() < 0.5:
            e["cost_usd"] = rnd.random() / 7
        if rnd.random() < 0.3:
            e["success"], e["error"] = False, rnd.choice(["timeout", "x" * 300])
        if t == "tool.call" and rnd.random() < 0.7:
            e["tool"] = rnd.choice(["grep", "bash"])
        out.append(e)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_events_added_in_batches_give_the_page_they_give_added_one_by_one(seed):
    """The hot path adds a batch per column (repeats of one series and bucket in one numpy call,
    the last event's exemplar per bucket): the page must hold the lines each event added alone
    gives, and at the cardinality cap the same totals."""
    import random

    rnd = random.Random(seed)
    events = random_events(rnd, 300)
    cap = {"metrics.max_series_per_metric": rnd.choice([3, 10_000])}
    together, _ = make(**cap)
    apart, _ = make(**cap)
    at = 0
    while at < len(events):
        size = rnd.choice([1, 7, 40, 300])
        feed(together, *events[at : at + size])
        together.flush()
        at += size
    for e in events:
        feed(apart, e)
        apart.flush()
    if cap["metrics.max_series_per_metric"] > 3:
        for openmetrics in (False, True):  # the same lines; series may be made in another order
            assert sorted(together.expose(openmetrics).splitlines()) == sorted(apart.expose(openmetrics).splitlines())
    else:
        # At the cap, a batch makes a family's series column by column (all input tokens, then
        # output), so other label sets may keep their own series (and be counted as folded):
        # every other total is the same.
        got, want = totals(together.expose(False)), totals(apart.expose(False))
        del got[("sidecar_series_overflow_total", None)], want[("sidecar_series_overflow_total", None)]
        assert got == want


def totals(text):
    """The sum of each sample name's values (per `le` for buckets), NaN-free."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("le"))
            out[key] = out.get(key, 0) + sample.value
    return {k: round(v, 6) for k, v in out.items()}


def test_small_batches_wait_and_every_read_adds_them_first():
    """A batch under FILE_AT events waits; a scrape, collect() and maintain each add it first."""
    from sidecar.sinks.metrics import FILE_AT

    reads = {
        "expose": lambda sink, reg: sink.expose(False),
        "collect": lambda sink, reg: reg.get_sample_value("agent_events_total", {}),
        "maintain": lambda sink, reg: sink.maintain(T0),
    }
    for name, read in reads.items():
        sink, reg = make()
        feed(sink, {"type": "workflow.started", "agent": "a", "duration_ms": 5, "run_id": "r", "workflow": "w"})
        assert not sink.events.rows and not sink._runs.open, "a small batch waits"
        read(sink, reg)
        assert list(sink.events.rows) == [("workflow.started", "a", "w", "info")] and list(sink._runs.open) == ["r"], name
        assert sink.workflows_active.values[sink.workflows_active.rows[("w",)]] == 1, name
    sink, reg = make()
    feed(sink, *({"type": "llm.call"} for _ in range(FILE_AT)))
    assert sink.events.values[sink.events.rows[("llm.call", "", "", "info")]] == FILE_AT  # added at once


def test_a_bad_span_id_is_left_out_and_the_trace_id_kept():
    sink, reg = make()
    feed(sink, {"type": "llm.call", "duration_ms": 120, "trace_id": TRACE, "span_id": "x" * 200})
    [(_, exemplar)] = exemplars_in(reg)
    assert exemplar.labels == {"trace_id": TRACE}
    assert reg.get_sample_value("sidecar_exemplar_ids_ignored_total", {"reason": "invalid_span"}) == 1


def test_no_exemplar_label_set_exceeds_the_openmetrics_limit():
    """Every accepted id, hostile or not, in every bucket: each exemplar's label names and
    values stay within 128 characters (the parser would raise otherwise)."""
    sink, reg = make()
    ids = HOSTILE_IDS + [TRACE, "e" * 32, "f" * 64 + "0" * 64]
    spans = (SPAN, "c" * 128, None)
    pairs = [(t, s) for t in ids for s in (*spans, t)]
    # Each pair in its own series (the agent label), so no exemplar hides another.
    feed(sink, *({"type": "x", "agent": str(n), "duration_ms": 10**i, "trace_id": t, "span_id": s} for i in range(8) for n, (t, s) in enumerate(pairs)))
    found = exemplars_in(reg)
    assert found and all(exemplar_chars(e.labels) <= 128 for _, e in found)


def test_exemplars_can_be_turned_off():
    sink, reg = make(**{"metrics.exemplars": False})
    feed(sink, {"type": "llm.call", "duration_ms": 120, "trace_id": TRACE})
    assert "# {" not in generate_openmetrics(reg).decode()


def test_tokens_split_by_type_and_cost_by_model():
    sink, reg = make()
    feed(
        sink,
        {"type": "llm.call", "agent": "a", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01},
        {"type": "llm.call", "agent": "a", "model": "gpt-4o", "input_tokens": 5, "cost_usd": 0.02},
        {"type": "llm.call", "agent": "a", "tokens": 7},
    )
    tok = lambda m, kind: reg.get_sample_value("agent_tokens_total", {"agent": "a", "model": m, "token_type": kind})  # noqa: E731
    assert (tok("gpt-4o", "input"), tok("gpt-4o", "output"), tok("", "unknown")) == (105, 20, 7)
    assert reg.get_sample_value("agent_cost_usd_total", {"agent": "a", "model": "gpt-4o"}) == pytest.approx(0.03)
    assert tok("", "input") is None


def test_unsuccessful_events_count_as_errors_by_kind():
    sink, reg = make()
    feed(
        sink,
        {"type": "tool.call", "agent": "a", "workflow": "w", "success": False, "error": "timeout"},
        {"type": "agent.failed", "agent": "a", "workflow": "w", "error": "timeout"},
        {"type": "agent.failed", "agent": "a", "workflow": "w"},
        {"type": "agent.failed", "agent": "a", "success": True},
    )
    assert reg.get_sample_value("agent_errors_total", {"agent": "a", "workflow": "w", "error": "timeout"}) == 2
    assert reg.get_sample_value("agent_errors_total", {"agent": "a", "workflow": "w", "error": ""}) == 1
    assert reg.get_sample_value("agent_errors_total", {"agent": "a", "workflow": "", "error": ""}) is None


def test_workflow_and_invocation_lifecycles_drive_gauges_and_outcomes():
    sink, reg = make()
    active = lambda w: reg.get_sample_value("agent_workflows_active", {"workflow": w})  # noqa: E731
    runs = lambda w, o: reg.get_sample_value("agent_workflow_runs_total", {"workflow": w, "outcome": o})  # noqa: E731
    inv = lambda a: reg.get_sample_value("agent_invocations_active", {"agent": a})  # noqa: E731
    feed(sink, *({"type": "workflow.started", "workflow": "review", "run_id": f"r{i}"} for i in range(3)))
    feed(sink, {"type": "workflow.started", "workflow": "review", "run_id": "r0"})  # a duplicate start counts once
    feed(sink, {"type": "agent.invoked", "agent": "coder", "invocation_id": "i1"}, {"type": "agent.invoked", "agent": "coder", "invocation_id": "i2"})
    assert (active("review"), inv("coder")) == (3, 2)
    feed(sink, {"type": "workflow.completed", "workflow": "review", "run_id": "r0"}, {"type": "workflow.failed", "workflow": "review", "run_id": "r1"})
    feed(sink, {"type": "agent.completed", "agent": "coder", "invocation_id": "i1"}, {"type": "agent.failed", "agent": "coder", "invocation_id": "i2"})
    feed(sink, {"type": "workflow.completed", "workflow": "review", "run_id": "unknown"})  # counted, gauge untouched
    assert (active("review"), inv("coder")) == (1, 0)
    assert (runs("review", "completed"), runs("review", "failed")) == (2, 1)


def test_runs_without_an_end_are_abandoned_after_the_configured_time():
    sink, reg = make(**{"lifecycle.abandon_after": "10m"})
    feed(sink, {"type": "workflow.started", "workflow": "w", "run_id": "old"}, {"type": "agent.invoked", "agent": "a", "invocation_id": "i"}, now=T0)
    feed(sink, {"type": "workflow.started", "workflow": "w", "run_id": "new"}, now=T0 + 300)
    sink.maintain(T0 + 599)
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 2
    sink.maintain(T0 + 601)
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 1
    assert reg.get_sample_value("agent_invocations_active", {"agent": "a"}) == 0
    assert reg.get_sample_value("agent_workflow_runs_total", {"workflow": "w", "outcome": "abandoned"}) == 1
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "old"}, now=T0 + 700)  # too late: not double-counted
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 1


def test_a_run_has_one_outcome_the_first():
    """Abandoned then completed late, or completed twice, or failed after completing: one outcome."""
    sink, reg = make(**{"lifecycle.abandon_after": "10m"})
    runs = lambda o: reg.get_sample_value("agent_workflow_runs_total", {"workflow": "w", "outcome": o})  # noqa: E731
    feed(sink, *({"type": "workflow.started", "workflow": "w", "run_id": r} for r in ("late", "twice")), now=T0)
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "twice"}, now=T0 + 1)
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "twice"}, now=T0 + 2)
    feed(sink, {"type": "workflow.failed", "workflow": "w", "run_id": "twice"}, now=T0 + 3)
    sink.maintain(T0 + 601)
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "late"}, now=T0 + 700)
    feed(sink, {"type": "workflow.failed", "workflow": "w", "run_id": "late"}, now=T0 + 701)
    assert (runs("completed"), runs("failed"), runs("abandoned")) == (1, None, 1)
    # An end for a run whose start was never seen is its one outcome too, and an id reused for a
    # new run (started again after its end) gets a new outcome.
    feed(sink, {"type": "workflow.failed", "workflow": "w", "run_id": "unseen"}, {"type": "workflow.failed", "workflow": "w", "run_id": "unseen"})
    feed(sink, {"type": "workflow.started", "workflow": "w", "run_id": "twice"}, {"type": "workflow.completed", "workflow": "w", "run_id": "twice"})
    assert (runs("completed"), runs("failed"), runs("abandoned")) == (2, 1, 1)
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 0


def test_long_run_ids_are_tracked_by_a_bounded_key_and_stay_distinct():
    sink, reg = make()
    a, b = "r" * 60_000 + "a", "r" * 60_000 + "b"
    feed(sink, {"type": "workflow.started", "workflow": "w", "run_id": a}, {"type": "workflow.started", "workflow": "w", "run_id": b})
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 2
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": a})
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 1
    assert all(len(k) <= 128 for k in [*sink._runs.open, *sink._runs.ended])


def test_the_sink_keeps_no_long_strings_from_events():
    """Labels are cut to 128 characters, so nothing the sink keeps may pin a longer string:
    not the slot cache, not the exemplars, not the lifecycle tables."""
    import gc
    import tracemalloc

    sink, reg = make()
    big = 50_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            long = f"{i:05d}" + "x" * big
            feed(sink, {
                "type": "workflow.started", "agent": long, "workflow": long, "model": long, "run_id": long, "error": long,
                "session_id": long, "span_id": long, "duration_ms": 5, "trace_id": TRACE, "input_tokens": 1, "cost_usd": 1,
                "success": False,
            }, {"type": "agent.invoked", "agent": long, "invocation_id": long, "duration_ms": 5, "trace_id": TRACE})
        sink.flush()  # small batches wait (FILE_AT): what is kept is what is left once they are added
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 100 * big / 4, f"{kept} bytes kept for 100 events of {7 * big} bytes of strings"


def test_lifecycle_tracking_is_bounded():
    sink, reg = make(**{"lifecycle.max_active": 2})
    feed(sink, *({"type": "workflow.started", "workflow": "w", "run_id": f"r{i}"} for i in range(5)))
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 2
    assert reg.get_sample_value("sidecar_lifecycle_untracked_total") == 3


def test_ended_runs_are_remembered_newest_first_up_to_max_active():
    """Past lifecycle.max_active ended ids the oldest is forgotten (its late repeat counts again),
    the newest kept (its repeat does not)."""
    sink, reg = make(**{"lifecycle.max_active": 2})
    runs = lambda: reg.get_sample_value("agent_workflow_runs_total", {"workflow": "w", "outcome": "completed"})  # noqa: E731
    for i in range(3):
        feed(sink, {"type": "workflow.started", "workflow": "w", "run_id": f"r{i}"}, {"type": "workflow.completed", "workflow": "w", "run_id": f"r{i}"})
    assert runs() == 3 and list(sink._runs.ended) == ["r1", "r2"]
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "r2"})
    assert runs() == 3
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "r0"})
    assert runs() == 4


def test_a_run_id_started_again_is_remembered_from_its_new_end():
    """An id started again is a new run: once it ends it is the newest ended id, so the ids ended
    since its first run are forgotten before it, and its late repeat still does not count."""
    sink, reg = make(**{"lifecycle.max_active": 2})
    runs = lambda: reg.get_sample_value("agent_workflow_runs_total", {"workflow": "w", "outcome": "completed"})  # noqa: E731
    run = lambda i: ({"type": "workflow.started", "workflow": "w", "run_id": i}, {"type": "workflow.completed", "workflow": "w", "run_id": i})  # noqa: E731
    feed(sink, *run("r1"), *run("r2"), *run("r1"))
    assert runs() == 3 and list(sink._runs.ended) == ["r2", "r1"]
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "r3"})  # pushes out r2, the oldest
    feed(sink, {"type": "workflow.completed", "workflow": "w", "run_id": "r1"})
    assert runs() == 4  # r3 only: r1's repeat is not a second outcome


def test_a_batch_is_numbered_when_consumed_not_when_filed():
    """A batch the decoder did not number (OTLP's) is numbered in consume, on the event loop: a
    small one is filed later, maybe by a scrape's worker thread, and two threads making label-set
    numbers at once could give two label sets one number."""
    sink, reg = make()
    lines = [json.dumps({"type": "x", "agent": "a"}).encode()]
    evs, raws, _ = EventDecoder().decode(lines, T0)
    batch = Batch(evs, raws, T0, "test")
    sink.consume(batch)
    assert not sink.events.rows, "a small batch waits"
    assert batch.label_sets is not None and batch.label_sets.owner is sink.label_sets


def test_a_gauge_row_freed_by_expiry_is_looked_up_again():
    """The lifecycle gauges cache each name's row; once expiry frees a row (and the next name
    takes it), a start of the old name must find a row of its own again."""
    sink, reg = make(**{"metrics.series_ttl": "100s"})
    active = lambda w: reg.get_sample_value("agent_workflows_active", {"workflow": w})  # noqa: E731
    feed(sink, {"type": "workflow.started", "workflow": "w1", "run_id": "r1"}, {"type": "workflow.completed", "workflow": "w1", "run_id": "r1"})
    for t in range(0, 230, 10):
        sink.maintain(T0 + t)
    assert active("w1") is None  # back at zero and idle: expired
    feed(sink, {"type": "workflow.started", "workflow": "w2", "run_id": "r2"}, now=T0 + 230)  # takes the freed row
    feed(sink, {"type": "workflow.started", "workflow": "w1", "run_id": "r3"}, now=T0 + 231)
    assert (active("w1"), active("w2")) == (1, 1)


def test_the_gauge_row_cache_is_bounded(monkeypatch):
    from sidecar.sinks import metrics

    monkeypatch.setattr(metrics, "_MAX_SLOTS", 4)
    sink, reg = make()
    for i in range(10):
        feed(sink, {"type": "workflow.started", "workflow": f"w{i}", "run_id": f"r{i}"}, {"type": "workflow.started", "workflow": "w0", "run_id": f"s{i}"})
    sink.flush()
    assert len(sink._runs._rows) <= 4
    assert [reg.get_sample_value("agent_workflows_active", {"workflow": f"w{i}"}) for i in range(10)] == [11] + [1] * 9


def test_a_raised_cap_gives_a_folded_name_its_own_gauge():
    sink, reg = make(**{"metrics.max_series_per_metric": 1})
    active = lambda w: reg.get_sample_value("agent_workflows_active", {"workflow": w})  # noqa: E731
    feed(sink, {"type": "workflow.started", "workflow": "a", "run_id": "r1"}, {"type": "workflow.started", "workflow": "b", "run_id": "r2"})
    assert (active("a"), active("b"), active("__overflow__")) == (1, None, 1)
    raised = Config().replace(**{"metrics.max_series_per_metric": 10})
    sink.reconfigure(raised.metrics, raised.lifecycle)
    feed(sink, {"type": "workflow.started", "workflow": "b", "run_id": "r3"})
    assert (active("b"), active("__overflow__")) == (1, 1)


def test_cardinality_guard_folds_new_label_sets_into_overflow():
    sink, reg = make(**{"metrics.max_series_per_metric": 3})
    feed(sink, *({"type": "x", "agent": f"agent-{i}"} for i in range(5)))
    feed(sink, {"type": "x", "agent": "agent-0"})  # an existing series keeps counting
    get = lambda a: reg.get_sample_value("agent_events_total", {"type": "x", "agent": a, "workflow": "", "severity": "info"})  # noqa: E731
    assert [get(f"agent-{i}") for i in range(5)] == [2, 1, 1, None, None]
    over = {"type": "__overflow__", "agent": "__overflow__", "workflow": "__overflow__", "severity": "__overflow__"}
    assert reg.get_sample_value("agent_events_total", over) == 2
    assert reg.get_sample_value("sidecar_series", {"metric": "agent_events"}) == 4
    assert reg.get_sample_value("sidecar_series_overflow_total", {"metric": "agent_events"}) == 2


def test_label_values_are_truncated_to_128_characters():
    sink, reg = make()
    feed(sink, {"type": "x", "agent": "a" * 300}, {"type": "x", "agent": "a" * 128 + "b"})
    assert reg.get_sample_value("agent_events_total", {"type": "x", "agent": "a" * 128, "workflow": "", "severity": "info"}) == 2


def test_idle_series_expire_and_come_back_when_updated():
    sink, reg = make(**{"metrics.series_ttl": "100s"})
    busy = {"type": "x", "agent": "busy", "duration_ms": 5}
    feed(sink, busy, {"type": "x", "agent": "idle", "duration_ms": 5}, {"type": "workflow.started", "workflow": "w", "run_id": "r"})
    for t in range(0, 230, 10):
        feed(sink, busy, now=T0 + t)
        sink.maintain(T0 + t)
    labels = {"type": "x", "workflow": "", "severity": "info"}
    assert reg.get_sample_value("agent_events_total", {**labels, "agent": "idle"}) is None
    assert reg.get_sample_value("agent_event_duration_seconds_count", {"type": "x", "agent": "idle", "workflow": ""}) is None
    assert reg.get_sample_value("agent_events_total", {**labels, "agent": "busy"}) == 24
    assert reg.get_sample_value("agent_workflows_active", {"workflow": "w"}) == 1  # still open: kept
    assert reg.get_sample_value("sidecar_series_expired_total", {"metric": "agent_events"}) == 2
    feed(sink, {"type": "x", "agent": "idle"}, now=T0 + 240)
    assert reg.get_sample_value("agent_events_total", {**labels, "agent": "idle"}) == 1


def test_exposition_passes_promtool(tmp_path):
    import subprocess

    sink, reg = make()
    feed(
        sink,
        {"type": "llm.call", "agent": 'quo"te\\back\nslash', "duration_ms": 3, "trace_id": "t", "input_tokens": 1, "cost_usd": 1},
        {"type": "workflow.started", "workflow": "w", "run_id": "r"},
    )
    out = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(reg), capture_output=True)
    assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()


def test_tool_calls_are_counted_by_agent_tool_and_outcome_with_their_durations():
    config = Config()
    sink = MetricsSink(config.metrics, config.lifecycle, CollectorRegistry())
    registry = CollectorRegistry()
    registry.register(sink)
    lines = [json.dumps(tool_event(type="tool.call", agent="coder", tool="search", duration_ms=d)).encode() for d in (20.0, 40.0)]
    lines.append(json.dumps(tool_event(type="tool.call", agent="coder", tool="shell", duration_ms=3000.0, success=False, error="timeout")).encode())
    lines.append(json.dumps(tool_event(type="llm.call", agent="coder", duration_ms=5.0)).encode())
    events, raws, _ = EventDecoder().decode(lines, 1_790_000_000.0)
    sink.consume(Batch(events, raws, 1_790_000_000.0, "unix"))
    get = registry.get_sample_value
    assert get("agent_tool_calls_total", {"agent": "coder", "tool": "search", "outcome": "completed"}) == 2
    assert get("agent_tool_calls_total", {"agent": "coder", "tool": "shell", "outcome": "failed"}) == 1
    assert get("agent_tool_duration_seconds_count", {"agent": "coder", "tool": "search"}) == 2
    assert get("agent_tool_duration_seconds_sum", {"agent": "coder", "tool": "shell"}) == 3.0
    assert get("agent_tool_duration_seconds_count", {"agent": "coder", "tool": ""}) is None  # the llm.call names no tool
