"""Window snapshots in-process: a store saved and restored answers exactly what the store that
never stopped answers (the oracle), and every kind of bad file is refused with its reason."""

from __future__ import annotations

import asyncio
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sidecar.config import WindowsConfig
from sidecar.protocol import is_failure_type
from sidecar.sinks.window import WindowSink
from sidecar.sinks.window.autosave import WindowAutosave
from sidecar.sinks.window.persist import SlicedCopy, SnapshotError, capture, read_file, restore, write_file
from sidecar.testing import FakeClock
from sidecar.types import Batch, Event

DURATIONS = (60.0, 300.0, 900.0)
QUERIES = [
    {},
    {"window": "5m"},
    {"by": "agent"},
    {"filters": {"agent": "planner"}},
    {"window": "1m", "filters": {"type": "tool.call"}, "by": "model"},
    {"window": "15m", "filters": {"workflow": "review"}},
    {"window": "5m", "by": "tool"},
]


def event(ts: float, i: int, type_: str = "llm.call", agent: str | None = "planner", dur: float | None = 10.0, run: str | None = None) -> Event:
    failed = is_failure_type(type_)
    return Event(
        type=type_, timestamp=ts, agent=agent, workflow="review" if i % 3 else None, model=("m1", "m2", None)[i % 3], tool=("grep", None)[i % 2],
        run_id=run, duration_ms=dur, input_tokens=i % 7, output_tokens=None, tokens=None if i % 2 else 3,
        cost_usd=(i % 11) / 7 if i % 4 else None, severity="error" if failed else ("info", "warning", "debug")[i % 3], success=not failed,
    )


def feed(sink: WindowSink, clock: FakeClock, events: list[Event]) -> None:
    sink.consume(Batch(events, [b"{}"] * len(events), clock.now, "test"))


def answers(sink: WindowSink) -> list[dict]:
    return [sink.stats(**q) for q in QUERIES]


def restarted(sink: WindowSink, clock: FakeClock, tmp_path, config: WindowsConfig, final: bool = True) -> WindowSink:
    """The same windows after a save, a stop and a start (a new sink on the same clock)."""
    path = str(tmp_path / "windows.npz")
    write_file(path, capture(sink.store, clock(), final))
    fresh = WindowSink(config, None, clock)
    restore(fresh.store, read_file(path), clock())
    return fresh


# A stream: batches of events around "now" (some out of order, some late), with the clock moving on.
batches = st.lists(
    st.tuples(
        st.floats(0, 400),  # clock advance before the batch
        st.lists(
            st.tuples(
                st.floats(-1000, 5),  # timestamp offset from now
                st.sampled_from(["llm.call", "tool.call", "agent.failed"]),
                st.sampled_from([None, "planner", "coder"]),
                st.one_of(st.none(), st.floats(0, 5000)),
            ),
            max_size=12,
        ),
    ),
    min_size=2,
    max_size=14,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=batches, split=st.integers(0, 13), max_samples=st.sampled_from([1_000_000, 6]), index_by=st.sampled_from([(), ("agent",)]))
def test_a_restarted_store_answers_exactly_what_the_running_one_answers(small_structures, tmp_path_factory, stream, split, max_samples, index_by):
    config = WindowsConfig(durations=DURATIONS, max_samples=max_samples, cumulative_samples=20, index_by=index_by)
    clock_a, clock_b = FakeClock(), FakeClock()
    a, b = WindowSink(config, None, clock_a), WindowSink(config, None, clock_b)
    n = 0
    for step, (advance, items) in enumerate(stream):
        if step == split:
            b = restarted(b, clock_b, tmp_path_factory.mktemp("snap"), config)
            assert answers(b) == answers(a)
        for clock, sink in ((clock_a, a), (clock_b, b)):
            clock.advance(advance)
            sink.maintain(clock())
            # Run ids are fresh per batch (as real runs are): see README on runs coming back after a restart.
            feed(sink, clock, [event(clock.now + off, n + i, t, agent, dur, run=f"r{step}") for i, (off, t, agent, dur) in enumerate(items)])
        n += len(items)
        assert answers(b) == answers(a)


def test_events_older_than_the_longest_window_are_dropped_on_load(tmp_path):
    config = WindowsConfig(durations=DURATIONS)
    clock = FakeClock()
    sink = WindowSink(config, None, clock)
    feed(sink, clock, [event(clock.now - 800, 1), event(clock.now - 10, 2), event(clock.now, 3)])
    path = str(tmp_path / "w.npz")
    write_file(path, capture(sink.store, clock(), final=True))
    clock.advance(500)  # the sidecar was down for a while
    fresh = WindowSink(config, None, clock)
    restored = restore(fresh.store, read_file(path), clock())
    assert restored.events == 2 and restored.complete
    assert fresh.stats("15m")["events"] == 2 and fresh.stats("5m")["events"] == 0
    assert fresh.store.tail - fresh.store.head == 2  # the old row is gone, not just out of the windows


def test_after_a_crash_windows_covering_the_gap_are_inexact_until_it_has_left_them(tmp_path):
    config = WindowsConfig(durations=DURATIONS)
    clock = FakeClock()
    sink = WindowSink(config, None, clock)
    feed(sink, clock, [event(clock.now - i, i) for i in range(20)])
    path = str(tmp_path / "w.npz")
    write_file(path, capture(sink.store, clock(), final=False))  # a periodic save: the crash comes later
    clock.advance(30)
    fresh = WindowSink(config, None, clock)
    restored = restore(fresh.store, read_file(path), clock())
    assert not restored.complete
    doc = fresh.stats()
    assert [doc["windows"][w]["exact"] for w in ("1m", "5m", "15m")] == [False, False, False]
    assert doc["windows"]["15m"]["events"] == 20
    clock.advance(61)
    doc = fresh.stats()
    assert [doc["windows"][w]["exact"] for w in ("1m", "5m", "15m")] == [True, False, False]
    clock.advance(900)
    assert all(w["exact"] for w in fresh.stats()["windows"].values())


# What happens between two slices of a save: a batch (timestamps relative to now: late ones
# rewrite rows in place), the clock moving on (rows leave), a maintenance tick.
between = st.lists(
    st.one_of(
        st.lists(st.tuples(st.floats(-1000, 5), st.sampled_from([None, "planner", "coder"])), min_size=1, max_size=9).map(lambda b: ("batch", b)),
        st.floats(0, 200).map(lambda s: ("advance", s)),
        st.just(("maintain", None)),
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    before=st.lists(st.floats(-1000, 0), min_size=0, max_size=40),
    turns=st.lists(between, min_size=1, max_size=12),
    slice_rows=st.integers(1, 8),
)
def test_a_save_copied_in_slices_while_events_arrive_is_the_store_as_it_was_at_its_last_turn(small_structures, before, turns, slice_rows):
    config = WindowsConfig(durations=DURATIONS, index_by=("agent",))
    clock = FakeClock()
    sink = WindowSink(config, None, clock)
    feed(sink, clock, [event(clock.now + off, i, run=f"r{i % 5}") for i, off in enumerate(before)])
    sink.maintain(clock())
    copy = SlicedCopy(sink.store, slice_rows=slice_rows)
    n = len(before)
    for things in turns:
        copy.step()  # one slice (or nothing left: the events below still change the store)
        for what, arg in things:
            if what == "batch":
                feed(sink, clock, [event(clock.now + off, n + i, agent=agent, run=f"r{(n + i) % 7}") for i, (off, agent) in enumerate(arg)])
                n += len(arg)
            elif what == "advance":
                clock.advance(arg)
            else:
                sink.maintain(clock())
    while copy.step():
        pass
    taken = {k: np.concatenate(v) if isinstance(v, list) else v for k, v in copy.finish(clock(), final=False).entries().items()}
    expected = capture(sink.store, clock(), final=False)  # the same instant, copied at once
    assert taken.keys() == expected.keys()
    for name in expected:
        assert np.array_equal(taken[name], expected[name]), name


async def test_a_periodic_save_goes_on_while_events_arrive_and_restores_as_of_its_last_turn(tmp_path):
    config = WindowsConfig(durations=DURATIONS, snapshot_path=str(tmp_path / "w.npz"))
    registry = CollectorRegistry()
    clock = FakeClock()
    sink = WindowSink(config, registry, clock)
    feed(sink, clock, [event(clock.now - i, i, run=f"r{i % 4}") for i in range(200)])
    autosave = WindowAutosave(sink, config, registry, clock)
    saving = asyncio.ensure_future(autosave.save(final=False))
    for i in range(30):  # the loop runs the save's slices between these batches, some of them late
        await asyncio.sleep(0)
        feed(sink, clock, [event(clock.now - (i % 3) * 50, 1000 + i, agent="during-the-save")])
    await saving
    assert registry.get_sample_value("sidecar_window_snapshot_writes_total", {"result": "ok"}) == 1
    assert registry.get_sample_value("sidecar_window_snapshot_last_pause_seconds") > 0
    assert registry.get_sample_value("sidecar_window_snapshot_last_duration_seconds") >= registry.get_sample_value(
        "sidecar_window_snapshot_last_pause_seconds"
    )
    fresh = WindowSink(config, None, clock)
    assert not restore(fresh.store, read_file(config.snapshot_path), clock()).complete  # a periodic save
    saved_events = fresh.stats()["cumulative"]["events"]
    assert 200 <= saved_events <= 230
    assert fresh.store.tail - fresh.store.head == saved_events  # rows and counters agree (restore checks each window)


async def test_a_periodic_save_that_cannot_write_says_why_and_keeps_serving(tmp_path, caplog):
    config = WindowsConfig(durations=DURATIONS, snapshot_path=str(tmp_path / "missing-dir" / "w.npz"))
    registry = CollectorRegistry()
    clock = FakeClock()
    sink = WindowSink(config, registry, clock)
    feed(sink, clock, [event(clock.now, 1)])
    await WindowAutosave(sink, config, registry, clock).save(final=False)
    assert registry.get_sample_value("sidecar_window_snapshot_writes_total", {"result": "error"}) == 1
    assert "No such file or directory" in caplog.text
    assert sink.stats("1m")["events"] == 1


def strip_exact(doc: dict) -> dict:
    """A document without its exact flags (a periodic save's restore marks the windows inexact)."""
    if isinstance(doc, dict):
        return {k: strip_exact(v) for k, v in doc.items() if k not in ("exact", "sample_size")}
    if isinstance(doc, list):
        return [strip_exact(v) for v in doc]
    return doc


# -- files that are not a good snapshot ------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    config = WindowsConfig(durations=DURATIONS)
    clock = FakeClock()
    sink = WindowSink(config, None, clock)
    feed(sink, clock, [event(clock.now - i, i, run="r") for i in range(30)])
    path = tmp_path / "w.npz"
    write_file(str(path), capture(sink.store, clock(), final=True))
    return path, config, clock


def rewrite(path, change, checksums: bool = True) -> None:
    """Change the file's arrays and write it again, with checksums that fit (as a buggy or
    foreign writer would) unless `checksums` is false (as damage would)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "checksums"}
        old_sums = z["checksums"]
    change(arrays)
    if checksums and all(a.dtype != object for a in arrays.values()):
        write_file(str(path), arrays)
        return
    with open(path, "wb") as f:
        np.savez(f, **arrays, checksums=old_sums)


def set_meta(**changes):
    def change(arrays):
        meta = json.loads(str(arrays["meta"][()]))
        arrays["meta"] = np.array(json.dumps({**meta, **changes}))

    return change


BAD_FILES = {
    "truncated": ("unreadable", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
    "a flipped byte": ("corrupt", lambda p: p.write_bytes(flip(p.read_bytes()))),
    "text": ("unreadable", lambda p: p.write_text("listen:\n  http: 0.0.0.0:1\n")),
    "empty": ("unreadable", lambda p: p.write_bytes(b"")),
    "another program's npz": ("foreign", lambda p: np.savez(p, weights=np.ones(3))),
    "no checksums": ("corrupt", lambda p: rewrite(p, lambda a: None, checksums=False) or rewrite_without_sums(p)),
    "a changed value, checksums not updated": ("corrupt", lambda p: rewrite(p, lambda a: a.__setitem__("rows.dur", a["rows.dur"] + 1), checksums=False)),
    "a single npy array": ("foreign", lambda p: p.write_bytes(npy_bytes())),
    "a zip that is not npz": ("foreign", lambda p: zipfile.ZipFile(p, "w").close()),
    "meta of another program": ("foreign", lambda p: rewrite(p, set_meta(magic="something else"))),
    "another format version": ("version", lambda p: rewrite(p, set_meta(version=2))),
    "other windows.durations": ("config", lambda p: rewrite(p, set_meta(durations=[60.0, 300.0, 3600.0]))),
    "counters that disagree with the rows": ("inconsistent", lambda p: rewrite(p, lambda a: a.__setitem__("windows.2.counters", a["windows.2.counters"] * 2))),
    "rows out of order": ("inconsistent", lambda p: rewrite(p, lambda a: a.__setitem__("rows.ts", a["rows.ts"][::-1].copy()))),
    "a key outside the key table": ("inconsistent", lambda p: rewrite(p, lambda a: a.__setitem__("rows.key", a["rows.key"] + 1000))),
    "a column of the wrong type": ("inconsistent", lambda p: rewrite(p, lambda a: a.__setitem__("rows.dur", a["rows.dur"].astype(np.float32)))),
    "a missing column": ("inconsistent", lambda p: rewrite(p, lambda a: a.pop("rows.cost"))),
    "an object array": ("unreadable", lambda p: rewrite(p, lambda a: a.__setitem__("rows.cost", np.array([{}, None], dtype=object)))),
    "meta of the wrong kind": ("inconsistent", lambda p: rewrite(p, set_meta(level="high"))),
}


def rewrite_without_sums(path) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "checksums"}
    np.savez(path, **arrays)


def flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.arange(4))
    return buf.getvalue()


@pytest.mark.parametrize("damage", BAD_FILES, ids=list(BAD_FILES))
def test_a_bad_file_is_refused_with_its_reason_and_never_half_restored(saved, damage):
    path, config, clock = saved
    reason, do = BAD_FILES[damage]
    do(path)
    with pytest.raises(SnapshotError) as refused:
        restore(WindowSink(config, None, clock).store, read_file(str(path)), clock())
    assert refused.value.reason == reason, str(refused.value)
    assert str(refused.value)  # a message an operator can act on


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_file(str(tmp_path / "none.npz"))


async def test_autosave_starts_empty_when_a_file_fails_half_way_through_its_restore(saved):
    path, config, clock = saved
    # Window 0 restores, window 1's counters disagree with its rows: the store was half filled.
    rewrite(path, lambda a: a.__setitem__("windows.1.counters", a["windows.1.counters"] * 2))
    registry = CollectorRegistry()
    sink = WindowSink(replace(config, snapshot_path=str(path)), registry, clock)
    autosave = WindowAutosave(sink, sink.config, registry, clock)
    await autosave.load()
    assert registry.get_sample_value("sidecar_window_snapshot_loads_total", {"result": "inconsistent"}) == 1
    doc = sink.stats(by="agent")
    assert [doc["windows"][w]["events"] for w in ("1m", "5m", "15m")] == [0, 0, 0]
    assert doc["windows"]["1m"]["groups"] == [] and sink.store.tail == sink.store.head
    feed(sink, clock, [event(clock.now, 1)])  # and it takes events as a new store does
    assert sink.stats("1m")["events"] == 1


async def test_periodic_saves_keep_to_their_interval_however_long_each_save_takes(tmp_path):
    config = WindowsConfig(durations=DURATIONS, snapshot_path=str(tmp_path / "w.npz"), snapshot_every=0.2)
    sink = WindowSink(config, None, FakeClock())
    autosave = WindowAutosave(sink, config, None, FakeClock())
    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def slow_save(final: bool) -> None:  # a save taking 60% of the interval, then one overrunning two ticks
        started.append(loop.time())
        await asyncio.sleep(0.5 if len(started) == 3 else 0.12)

    autosave.save = slow_save  # type: ignore[method-assign]
    t0 = loop.time()
    task = asyncio.ensure_future(autosave.run())
    await asyncio.sleep(1.55)
    autosave._stop.set()
    await task
    offsets = [(t - t0) / 0.2 for t in started]  # in ticks; a loaded machine may start one late
    # ticks 1, 2, 3; the third runs until 5.5, so ticks 4 and 5 are skipped, not run late or at once
    assert [round(o) for o in offsets] == [1, 2, 3, 6, 7]
    assert all(-0.01 < o - round(o) < 0.4 for o in offsets)
