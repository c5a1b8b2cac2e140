"""Label-set numbers: made once per batch, shared by the metrics sink and the window store."""

import json

from prometheus_client import CollectorRegistry

from sidecar.app import build_sinks
from sidecar.config import Config
from sidecar.protocol import EventDecoder
from sidecar.sinks.labelsets import LabelSets
from sidecar.sinks.metrics import MetricsSink
from sidecar.types import Batch

T0 = 1_790_000_000.0


def batch_of(*events):
    decoded, raws, rejected = EventDecoder().decode([json.dumps(e).encode() for e in events], T0)
    assert not rejected
    return Batch(decoded, raws, T0, "test")


def test_equal_labels_get_one_number_and_long_or_surplus_ones_none():
    sets = LabelSets(limit=3)
    got = sets.number(batch_of(
        {"type": "a", "agent": "x"}, {"type": "a", "agent": "x"}, {"type": "a", "agent": "y"},
        {"type": "a", "agent": "x", "success": False}, {"type": "a", "agent": "z" * 129}, {"type": "b"},
    ).events)
    assert got == [0, 0, 1, 2, -1, -1]  # a failure is another label set; past the limit, none
    assert len(sets) == 3


def test_a_batch_keeps_the_numbers_of_the_label_sets_that_made_them():
    one, other = LabelSets(), LabelSets()
    other.number(batch_of({"type": "first"}).events)
    b = batch_of({"type": "second"})
    assert one.of(b) == [0] and one.of(b) is one.of(b)  # made once
    assert other.of(b) == [1]  # not the numbers another LabelSets made


def test_sinks_with_their_own_numbers_count_the_same_batch_right():
    """Two metrics sinks, each with its own LabelSets, fed the same Batch objects: neither may read
    the other's numbers off the batch."""
    first, second = (MetricsSink(Config().metrics, Config().lifecycle, CollectorRegistry()) for _ in range(2))
    first.consume(batch_of(*({"type": "t", "agent": f"a{i}"} for i in range(5))))
    shared = batch_of({"type": "t", "agent": "b"}, {"type": "t", "agent": "a0"})
    first.consume(shared)
    second.consume(shared)
    for sink in (first, second):
        sink.flush()
    assert second.events.cell(("t", "b", "", "info")).value == 1 and second.events.cell(("t", "a0", "", "info")).value == 1
    assert first.events.cell(("t", "b", "", "info")).value == 1 and first.events.cell(("t", "a0", "", "info")).value == 2


def test_the_built_sinks_share_one_numbering_and_agree_with_it():
    """build_sinks hands one LabelSets to the metrics sink and the window store: a batch is numbered
    once, and each maps the numbers to its own series and keys, events with long labels included."""
    sinks = build_sinks(Config(), CollectorRegistry(), lambda: T0)
    assert sinks.metrics.label_sets is sinks.window.label_sets
    events = [{"type": t, "agent": a, "timestamp": T0, "duration_ms": 5} for t in ("x", "y") for a in ("p", "q", "r" * 200)]
    for _ in range(2):
        b = batch_of(*events, *events)
        sinks.metrics.consume(b)
        sinks.window.consume(b)
        assert b.label_sets is not None and b.label_sets.owner is sinks.metrics.label_sets
        sinks.metrics.flush()  # each batch added apart: the second through the numbers the first noted
        sinks.window.flush()
    assert len(sinks.metrics.label_sets) == 4  # the long agent's label sets are not numbered
    for t in ("x", "y"):
        for a in ("p", "q", "r" * 128):
            assert sinks.metrics.events.cell((t, a, "", "info")).value == 4
    doc = sinks.window.stats("1m", by="agent")
    assert doc["events"] == 24 and {g["key"]: g["events"] for g in doc["groups"]} == {"p": 8, "q": 8, "r" * 128: 8}


def test_a_sinks_map_reads_minus_one_for_unnumbered_events_whatever_its_size():
    from sidecar.sinks.labelsets import Mapped

    for size in (1, 62, 63, 64, 65, 200):
        mapped = Mapped()
        mapped.ids(list(range(size)))
        for n in range(size):
            mapped.note(n, 1000 + n)
        assert mapped.ids([-1, size - 1, 0]).tolist() == [-1, 1000 + size - 1, 1000]


def test_failed_and_tool_positions_agree_with_the_events_themselves():
    """`failed` and `tools` read what a number says about its events: they must give what a test of
    every event gives, for numbered and unnumbered (long, surplus) events, for batches long enough
    for the array path and short ones, alone and end to end, as the table grows past its first size."""
    import random

    rnd = random.Random(7)
    sets = LabelSets(limit=100)  # the table grows (64, 128) and then fills: later label sets get -1

    def event(i):
        e = {"type": rnd.choice(["t", "u", "agent.failed"]), "agent": rnd.choice(["a", "b", "c" * 129, f"n{i % 90}"])}
        if rnd.random() < 0.3:
            e["success"] = rnd.random() < 0.5
        if rnd.random() < 0.3:
            e["tool"] = rnd.choice(["search", "t" * 200])
        return e

    for sizes in ([1], [5, 40], [100], [3, 70, 1], [200, 200]):
        batches = [batch_of(*(event(i) for i in range(n))) for n in sizes]
        events = [e for b in batches for e in b.events]
        want_failed = [i for i, e in enumerate(events) if e.success is False]
        want_tools = [i for i, e in enumerate(events) if e.tool is not None]
        assert sets.failed(batches) == want_failed
        assert sets.failed(batches) == want_failed  # read again: made once per batch
        assert sets.tools(batches) == want_tools
    assert len(sets) == 100 and want_failed and want_tools


def test_an_unnumbered_event_is_not_taken_for_the_last_label_set_of_the_table():
    """Number -1 reads the table's last entry: it must stay False as the table grows."""
    sets = LabelSets(limit=64)
    sets.number(batch_of(*({"type": "t", "agent": f"a{i}"} for i in range(63))).events)
    sets.number(batch_of({"type": "t", "agent": "last", "success": False, "tool": "x"}).events)  # number 63: the table grows
    b = batch_of(*({"type": "t", "agent": f"more{i}"} for i in range(40)))  # past the limit: all -1
    assert set(sets.of(b)) == {-1}
    assert sets.failed([b]) == [] and sets.tools([b]) == []
