"""The tail hub without sockets: filter parsing, indexed matching vs a brute-force oracle, drops."""

import asyncio
import fnmatch
import json
import re
from array import array
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sidecar.config import TailConfig
from sidecar.protocol import EventDecoder
from sidecar.sinks.tail import MAX_CONTROL, FilterError, TailHub, parse_filter, parse_interval
from sidecar.types import SEVERITIES, Batch


def batch_of(*events: dict, received_at: float = 1_790_000_000.5) -> Batch:
    lines = [json.dumps(e).encode() for e in events]
    evs, raws, rejected = EventDecoder().decode(lines, received_at)
    assert not rejected
    return Batch(evs, raws, received_at, "test")


def delivered(client) -> list[dict]:
    return [json.loads(item) for item in client.queue]


@pytest.mark.parametrize(
    "items, expected",
    [
        ([], {}),
        ([("agent", "a"), ("agent", "b")], {"agent": ["a", "b"]}),
        ([("agent", ["a", "a"])], {"agent": ["a"]}),
        ([("type", "llm.*"), ("workflow", "w")], {"type": ["llm.*"], "workflow": ["w"]}),
        ([("severity", "error"), ("severity", "warning")], {"severity": "warning"}),
        ([("model", "m"), ("run_id", "r")], {"model": ["m"], "run_id": ["r"]}),
    ],
)
def test_filter_is_normalised(items, expected):
    assert parse_filter(items).as_dict() == expected


@pytest.mark.parametrize(
    "items, error",
    [
        ([("colour", "red")], "unknown filter key 'colour'"),
        ([("agent", "")], "filter agent: values must be non-empty strings"),
        ([("agent", 3)], "filter agent: values must be non-empty strings, not 3"),
        ([("agent", "x" * 300)], "longer than 256 characters"),
        ([("agent", [str(i) for i in range(101)])], "filter agent: at most 100 values"),
        ([("severity", "loud")], "filter severity: 'loud' is not one of debug, info"),
    ],
)
def test_bad_filter_is_refused_with_its_reason(items, error):
    with pytest.raises(FilterError, match=error):
        parse_filter(items)


@pytest.mark.parametrize(
    "items, error",
    [
        ([("agent", [f"*{i}" for i in range(17)])], "filter: at most 16 globs (values with * ? or [) in one filter"),
        ([("agent", [f"*{i}" for i in range(9)]), ("type", [f"x.{i}*" for i in range(8)])], "at most 16 globs"),
        ([("agent", "*" + "a" * 128)], "filter agent: a glob is longer than 128 characters"),
        ([("type", "?" * 129)], "filter type: a glob is longer than 128 characters"),
    ],
)
def test_a_filter_holding_more_glob_work_than_the_bound_is_refused(items, error):
    with pytest.raises(FilterError, match=re.escape(error)):
        parse_filter(items)


def test_the_glob_bound_counts_globs_only():
    at_limit = parse_filter([("agent", [f"*{i}" for i in range(16)] + [str(i) for i in range(50)]), ("workflow", "w*x" * 60)])
    assert len(at_limit.get("agent")) == 66  # exact values (and globs on exact-only keys) are not regexes


async def test_globs_match_the_label_value_not_what_lies_beyond_its_128_characters():
    hub = TailHub(TailConfig(), CollectorRegistry())
    past_label = hub.connect(None, parse_filter([("agent", "*b")]))
    on_label = hub.connect(None, parse_filter([("agent", "a*a")]))
    exact = hub.connect(None, parse_filter([("agent", "a" * 128 + "b")]))
    hub.consume(batch_of({"type": "t", "agent": "a" * 128 + "b"}))
    assert not past_label.queue and len(on_label.queue) == 1
    assert len(exact.queue) == 1  # exact values still compare whole
    await hub.close()


@pytest.mark.parametrize("value", [-1, 60_001, "soon", True, 1.5, "\u00b2", "\u0661\u0662", "\uff15", " 5", "5\n", "+5"])
def test_bad_interval_is_refused(value):
    with pytest.raises(FilterError, match="interval_ms must be an integer from 0 to 60000"):
        parse_interval(value)


def test_exact_agent_filters_are_indexed_and_globs_fall_back():
    assert parse_filter([("agent", "a"), ("type", "x.*")]).index_key() == ("agent", ("a",))
    assert parse_filter([("agent", "a*"), ("type", "x.y")]).index_key() == ("type", ("x.y",))
    assert parse_filter([("agent", "a*"), ("severity", "error")]).index_key() is None


async def test_an_indexed_filter_checks_every_other_condition_too():
    hub = TailHub(TailConfig(), CollectorRegistry())
    client = hub.connect(None, parse_filter([("agent", "a"), ("workflow", "w"), ("severity", "warning")]))
    hub.consume(batch_of(
        {"type": "x.y", "agent": "a", "workflow": "w", "severity": "error"},  # all three hold
        {"type": "x.y", "agent": "a", "workflow": "w", "severity": "info"},  # too mild
        {"type": "x.y", "agent": "a", "workflow": "v", "severity": "error"},  # another workflow
        {"type": "x.y", "agent": "b", "workflow": "w", "severity": "error"},  # another agent
    ))
    assert [(e["agent"], e["workflow"], e["severity"]) for e in delivered(client)] == [("a", "w", "error")]
    await hub.close()


async def test_event_is_sent_as_sent_with_received_at_spliced_in():
    hub = TailHub(TailConfig(), CollectorRegistry())
    client = hub.connect(None, parse_filter([]))
    line = b'{"type": "llm.call",  "payload": {"k": [1, 2]}, "extra": "\\u00e9"}  \r'
    evs, raws, _ = EventDecoder().decode([line], 1_790_000_000.25)
    hub.consume(Batch(evs, raws, 1_790_000_000.25, "test"))
    assert list(client.queue) == [b'{"type": "llm.call",  "payload": {"k": [1, 2]}, "extra": "\\u00e9","received_at":1790000000.25}']
    await hub.close()


async def test_a_received_at_the_sender_set_is_replaced_not_duplicated():
    hub = TailHub(TailConfig(), CollectorRegistry())
    client = hub.connect(None, parse_filter([]))
    hub.consume(batch_of({"type": "a.b", "received_at": 1}, received_at=5.0))
    assert delivered(client) == [{"type": "a.b", "received_at": 5.0}]
    await hub.close()


@pytest.mark.parametrize(
    "line",
    [
        # accepted bodies the whole-event decode of the old splice refused
        b'{"type": "a.b", "received_at": 1, "payload": {"big": 1e999, "neg": -1E400}}',
        b'{"type": "a.b", "payload": [1e999], "received_at": "soon"}',
        # the key spelled with escapes: one received_at, not two
        b'{"type": "a.b", "received\\u005fat": 1, "x": "\\u00e9"}',
        b'{"type": "a.b", "\\u0072eceived_at": 1, "received_at": 2}',
    ],
)
async def test_any_accepted_body_gets_exactly_one_received_at(line):
    hub = TailHub(TailConfig(), CollectorRegistry())
    client = hub.connect(None, parse_filter([]))
    evs, raws, rejected = EventDecoder().decode([line], 7.5)
    assert not rejected
    assert hub.consume(Batch(evs, raws, 7.5, "test")) is None
    (item,) = client.queue
    pairs = json.loads(item, object_pairs_hook=list, parse_constant=str)
    assert [v for k, v in pairs if k == "received_at"] == [7.5]
    await hub.close()


async def test_an_event_that_cannot_be_spliced_is_left_out_alone_and_reported():
    hub = TailHub(TailConfig(), CollectorRegistry())
    everything = hub.connect(None, parse_filter([]))
    by_agent = hub.connect(None, parse_filter([("agent", "a")]))
    globbed = hub.connect(None, parse_filter([("agent", "a*")]))
    good = batch_of(*[{"type": "t", "agent": "a", "n": i} for i in range(5)])
    # Raw bytes no splice can use (the decoder never produces them; a future bug might).
    raws = good.raws[:2] + [b"not an object"] + good.raws[3:]
    drops = hub.consume(Batch(good.events, raws, good.received_at, "test"))
    assert drops == {2: "splice_failed"}
    for client in (everything, by_agent, globbed):
        assert [e["n"] for e in delivered(client)] == [0, 1, 3, 4]
    await hub.close()


async def test_a_client_queue_is_bounded_in_bytes_dropping_the_oldest_and_counting():
    registry = CollectorRegistry()
    hub = TailHub(TailConfig(client_queue_bytes=1000), registry)
    client = hub.connect(None, parse_filter([]))
    hub.consume(batch_of(*[{"type": "t", "n": i, "pad": "x" * 200} for i in range(10)]))
    kept = delivered(client)
    assert sum(map(len, client.queue)) == client.queued_bytes <= 1000
    assert [e["n"] for e in kept] == list(range(10 - len(kept), 10)) and len(kept) == 3
    assert client.dropped == 7 == registry.get_sample_value("sidecar_tail_dropped_total")
    hub.consume(batch_of({"type": "t", "n": 10, "pad": "y" * 5000}))  # bigger than the bound: kept alone
    assert [e["n"] for e in delivered(client)] == [10] and client.dropped == 10
    hub.handle(client, json.dumps({"op": "subscribe", "filter": {}}))
    assert client.queued_bytes == 0 and not client.queue
    await hub.close()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6), st.integers(1, 60),
    st.lists(st.tuples(st.lists(st.integers(1, 25), max_size=9), st.integers(0, 4)), max_size=8),
)
def test_queue_bounds_keep_the_newest_suffix_and_count_every_eviction(max_events, max_bytes, batches):
    """Batches arrive, a sender takes some (as `run` does); the byte count never drifts."""
    async def run():
        hub = TailHub(TailConfig(client_queue=max_events, client_queue_bytes=max_bytes), CollectorRegistry())
        client = hub.connect(None, parse_filter([]))
        await hub.disconnect(client)  # no sender: only `offer` touches the queue
        offered, evicted, sent = [], 0, 0
        for sizes, take in batches:
            items = [b"%d:" % (len(offered) + k) + b"x" * n for k, n in enumerate(sizes)]
            offered += items
            evicted += client.offer(items, array("q", accumulate(map(len, items), initial=0)))
            queue = list(client.queue)
            assert client.queued_bytes == sum(map(len, queue))
            assert len(queue) <= max_events and (client.queued_bytes <= max_bytes or len(queue) == 1)
            assert offered[len(offered) - len(queue) :] == queue and evicted + sent + len(queue) == len(offered)
            took = min(take, len(queue))
            for _ in range(took):
                client.queue.popleft()
            client.release(took)
            sent += took
            assert client.queued_bytes == sum(map(len, client.queue))
        assert client.dropped == evicted

    asyncio.run(run())


async def test_replies_are_never_dropped_the_route_is_told_to_stop_reading_instead():
    hub = TailHub(TailConfig(), CollectorRegistry())
    client = hub.connect(None, parse_filter([]))
    await asyncio.sleep(0)
    await hub.disconnect(client)  # no sender: replies stay queued, as for a client that never reads
    for i in range(MAX_CONTROL + 10):
        assert client.room.is_set() == (i < MAX_CONTROL)
        hub.handle(client, '{"op": "pause"}')
    assert len(client.control) == MAX_CONTROL + 10 and not client.room.is_set()


@pytest.mark.parametrize(
    "message, error",
    [
        ('{"op": "subscribe", "filter": {"agent": "a", "agent": "b"}}', "duplicate key 'agent' in the message"),
        ('{"op": "subscribe", "op": "pause"}', "duplicate key 'op'"),
        ('{"op": "subscribe", "filter": {}, "interval_ms": NaN}', "NaN is not JSON"),
        ("[" * 100_000, "message must be a JSON object"),
    ],
)
async def test_an_ambiguous_message_is_refused_naming_what_is_wrong(message, error):
    hub = TailHub(TailConfig(), CollectorRegistry())
    client = hub.connect(None, parse_filter([("agent", "x")]))
    await hub.disconnect(client)
    hub.handle(client, message)
    reply = json.loads(client.control.popleft())
    assert reply["op"] == "error" and error in reply["error"]
    assert client.filter == parse_filter([("agent", "x")])


async def test_full_queue_drops_oldest_and_counts():
    registry = CollectorRegistry()
    hub = TailHub(TailConfig(client_queue=3), registry)
    client = hub.connect(None, parse_filter([("agent", "a")]))
    other = hub.connect(None, parse_filter([]))
    hub.consume(batch_of(*[{"type": "t", "agent": "a", "n": i} for i in range(5)]))
    assert [e["n"] for e in delivered(client)] == [2, 3, 4]
    assert client.dropped == 2 and other.dropped == 2
    assert registry.get_sample_value("sidecar_tail_dropped_total") == 4
    assert registry.get_sample_value("sidecar_tail_clients") == 2
    await hub.close()
    assert registry.get_sample_value("sidecar_tail_clients") == 0


async def test_resubscribing_moves_a_client_between_index_and_fallback():
    hub = TailHub(TailConfig(), CollectorRegistry())
    client = hub.connect(None, parse_filter([("agent", "a")]))
    hub.handle(client, json.dumps({"op": "subscribe", "filter": {"agent": "b*"}}))
    hub.consume(batch_of({"type": "t", "agent": "a"}, {"type": "t", "agent": "bee"}))
    assert [e["agent"] for e in delivered(client)] == ["bee"]
    assert hub._index == {}
    hub.handle(client, json.dumps({"op": "subscribe", "filter": {"agent": ["a", "c"]}}))
    assert not client.queue  # the old filter's events are not sent after the ack
    assert not hub._fallback and set(hub._index["agent"]) == {"a", "c"}
    await hub.disconnect(client)
    assert hub._index == {} and not hub.clients


# -- indexed matching agrees with checking every filter against every event --------

AGENTS = ["a", "b", "ab", None]
TYPES = ["llm.call", "llm.stream", "tool.call", "agent.failed"]
names = st.sampled_from(["a", "b", "ab", "a*", "?b", "[ab]"])
type_names = st.sampled_from(["llm.call", "llm.*", "tool.call", "*.failed", "*"])

filters = st.fixed_dictionaries(
    {},
    optional={
        "agent": st.lists(names, min_size=1, max_size=3),
        "type": st.lists(type_names, min_size=1, max_size=2),
        "workflow": st.lists(st.sampled_from(["w1", "w2"]), min_size=1, max_size=2),
        "severity": st.sampled_from(SEVERITIES),
        "model": st.lists(st.sampled_from(["m1", "m2"]), min_size=1, max_size=1),
        "run_id": st.lists(st.sampled_from(["r1", "r2"]), min_size=1, max_size=2),
    },
)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        "agent": st.sampled_from(AGENTS[:-1]),
        "workflow": st.sampled_from(["w1", "w2"]),
        "severity": st.sampled_from(SEVERITIES),
        "model": st.sampled_from(["m1", "m2"]),
        "run_id": st.sampled_from(["r1", "r2"]),
    },
)


def oracle(flt: dict, ev: dict) -> bool:
    sev = ev.get("severity") or ("error" if ev["type"].endswith(".failed") else "info")
    for key, vals in flt.items():
        if key == "severity":
            if SEVERITIES.index(sev) < SEVERITIES.index(vals):
                return False
        elif key in ("agent", "type"):
            if not any(fnmatch.fnmatchcase(ev.get(key) or "", v) for v in vals):
                return False
        elif ev.get(key) not in vals:
            return False
    return True


@pytest.mark.untraced
@settings(max_examples=150, deadline=None)
@given(st.lists(filters, min_size=1, max_size=8), st.lists(events, max_size=30))
def test_indexed_matching_equals_brute_force(flts, evs):
    async def run():
        hub = TailHub(TailConfig(), CollectorRegistry())
        clients = [hub.connect(None, parse_filter(f.items())) for f in flts]
        if evs:
            hub.consume(batch_of(*evs))
        got = [[json.loads(i) for i in c.queue] for c in clients]
        await hub.close()
        return got

    got = asyncio.run(run())
    for flt, received in zip(flts, got):
        expected = [ev for ev in evs if oracle(flt, ev)]
        assert [{k: v for k, v in r.items() if k != "received_at"} for r in received] == expected


def test_a_message_stays_under_1_mib_unless_one_event_is_bigger():
    from sidecar.sinks.tail import MAX_MESSAGE_BYTES, _fit

    big = b"x" * (MAX_MESSAGE_BYTES // 3)
    assert _fit([big] * 5) == 2
    assert _fit([big] * 2) == 2
    assert _fit([b"y" * (MAX_MESSAGE_BYTES + 1), b"z"]) == 1


class RecordingWire:
    """A wire that keeps each write (one system call on a real socket) as its list of frames."""

    on_writable = None
    write_paused = False

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []

    def is_open(self) -> bool:
        return True

    def write_frame(self, frame: bytes) -> None:
        self.writes.append([frame])

    def write_frames(self, frames: list[bytes]) -> None:
        self.writes.append(list(frames))


def frame_payload(frame: bytes) -> dict:
    n = frame[1] & 0x7F
    start = {126: 4, 127: 10}.get(n, 2)
    return json.loads(frame[start:])


async def test_a_client_that_is_behind_gets_its_backlog_in_one_write_each_message_within_max_batch():
    hub = TailHub(TailConfig(max_batch=500), CollectorRegistry())
    wire = RecordingWire()
    hub.connect(None, parse_filter([("agent", "a")]), wire=wire)
    hub.consume(batch_of(*[{"type": "t", "agent": "a", "n": i} for i in range(1200)]))
    await asyncio.sleep(0)  # the writer pass
    assert len(wire.writes) == 1  # one system call, not one per loop turn
    messages = [frame_payload(f) for f in wire.writes[0]]
    assert [len(m["events"]) for m in messages] == [500, 500, 200]
    assert [e["n"] for m in messages for e in m["events"]] == list(range(1200))
    await hub.close()


async def test_with_interval_ms_a_client_behind_still_gets_one_message_per_interval():
    hub = TailHub(TailConfig(max_batch=500), CollectorRegistry())
    wire = RecordingWire()
    hub.connect(None, parse_filter([]), interval=60.0, wire=wire)
    hub.consume(batch_of(*[{"type": "t", "n": i} for i in range(1200)]))
    await asyncio.sleep(0)
    assert [[len(frame_payload(f)["events"]) for f in w] for w in wire.writes] == [[500]]
    await hub.close()


async def test_clients_of_a_group_that_keep_up_share_one_frame_and_one_behind_is_told_what_it_missed():
    hub = TailHub(TailConfig(client_queue=3), CollectorRegistry())
    wires = [RecordingWire() for _ in range(3)]
    clients = [hub.connect(None, parse_filter([("agent", "a")]), wire=w) for w in wires]
    hub.consume(batch_of(*[{"type": "t", "agent": "a", "n": i} for i in range(2)]))
    await asyncio.sleep(0)
    assert wires[0].writes[0][0] is wires[1].writes[0][0] is wires[2].writes[0][0]  # framed once
    assert all(c.queued_bytes == 0 and not c.queue and not c.segments for c in clients)
    wires[2].write_paused = True  # its socket buffer is full: skipped, its queue drops the oldest
    hub.consume(batch_of(*[{"type": "t", "agent": "a", "n": i} for i in range(2, 4)]))
    await asyncio.sleep(0)
    hub.consume(batch_of(*[{"type": "t", "agent": "a", "n": i} for i in range(4, 7)]))
    await asyncio.sleep(0)
    assert clients[2].queued_bytes == sum(len(e) for e in clients[2].queue)
    wires[2].write_paused = False
    clients[2].kick()
    await asyncio.sleep(0)
    got = [frame_payload(w[0]) for w in wires[2].writes]
    assert [e["n"] for m in got for e in m["events"]] == [0, 1, 4, 5, 6]
    assert [m["dropped"] for m in got] == [0, 2]
    assert [e["n"] for w in wires[0].writes for e in frame_payload(w[0])["events"]] == list(range(7))
    assert all(c.queued_bytes == 0 and not c.segments for c in clients)
    await hub.close()
