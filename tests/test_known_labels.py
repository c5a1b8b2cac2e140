"""The literal decoders (sidecar.known_labels): label values come out of msgspec as the kept
objects, new values are built in at most every REBUILD_EVERY, and whatever they refuse is decoded
plainly with the same result."""

import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.known_labels import KnownLabels
from sidecar.protocol import MAX_SHARED_LENGTH, EventDecoder, LineBlock
from sidecar.types import Event

NOW = 1_790_000_000.0


def lines(*events: dict) -> list[bytes]:
    return [json.dumps({"timestamp": NOW, **e}, separators=(",", ":")).encode() for e in events]


def block(events: list[dict]) -> LineBlock:
    return LineBlock(b"\n".join(lines(*events)) + b"\n")


def whole_block_decoder(known: KnownLabels | None = None) -> EventDecoder:
    decoder = EventDecoder()
    decoder.block_min = 0  # every LineBlock parsed whole
    if known is not None:
        decoder.known = known
    return decoder


def plain(items) -> tuple:
    """What a decoder without literals makes of `items`."""
    decoder = whole_block_decoder(KnownLabels(max_values=0))
    return decoder.decode(items, NOW)


EVENTS = [{"type": "llm.call", "agent": f"agent-{i % 3}", "workflow": "triage", "model": "gpt-4o", "tool": "search" if i % 2 else None} for i in range(12)]


def test_labels_come_out_as_the_kept_objects_once_built():
    decoder = whole_block_decoder()
    first, _, _ = decoder.decode(block(EVENTS), NOW)  # plain: the values are noted
    assert type(first[0]) is Event and decoder.known.builds == 0
    for items in (block(EVENTS), lines(*EVENTS)):  # a block, and a list (HTTP's items)
        later, _, rejected = decoder.decode(items, NOW)
        assert type(later[0]) is not Event and isinstance(later[0], Event) and not rejected
        assert later == first and not (later[0] != first[0]) and later[0] != first[1]
        for a, b in zip(first, later):
            for name in ("type", "agent", "workflow", "model", "tool"):
                assert getattr(a, name) is getattr(b, name), name
            assert (b.severity, b.success) == ("info", True)  # filled in, as on the plain path
    assert decoder.known.builds == 1


def test_a_new_value_is_decoded_plainly_then_built_in_at_most_every_rebuild_every():
    known = KnownLabels(rebuild_every=10.0, pause_after_miss=0.0)
    decoder = whole_block_decoder(known)
    decoder.decode(block(EVENTS), NOW)
    decoder.decode(block(EVENTS), NOW)
    assert known.builds == 1
    newer = [{**e, "agent": "agent-new"} for e in EVENTS]
    for now in (NOW + 1, NOW + 9):  # a value not built in: parsed plainly, the same events
        events, _, rejected = decoder.decode(block(newer), now)
        assert type(events[0]) is Event and (events, rejected) == plain(block(newer))[::2]
        assert known.builds == 1
    events, _, _ = decoder.decode(block(newer), NOW + 10)
    assert known.builds == 2 and type(events[0]) is not Event and events[0].agent == "agent-new"


def test_after_a_miss_the_plain_decoders_for_pause_after_miss():
    known = KnownLabels(rebuild_every=0.0, pause_after_miss=5.0)
    decoder = whole_block_decoder(known)
    decoder.decode(block(EVENTS), NOW)
    long_agent = [{**EVENTS[0], "agent": "x" * (MAX_SHARED_LENGTH + 1)}]  # never kept, so never built in
    for _ in range(2):
        events, _, _ = decoder.decode(block(long_agent), NOW)
        assert events[0].agent == "x" * (MAX_SHARED_LENGTH + 1)
    assert known.builds == 1 and known.literals is not None
    assert known.decoders(NOW + 4.9) is None  # paused by the miss
    assert known.decoders(NOW + 5.0) is known.literals


def test_a_build_ends_a_pause():
    known = KnownLabels(rebuild_every=0.0, pause_after_miss=60.0)
    decoder = whole_block_decoder(known)
    decoder.decode(block(EVENTS), NOW)
    newer = [{**EVENTS[0], "model": "claude"}]
    decoder.decode(block(newer), NOW)  # built, then missed on "claude", which is noted
    events, _, _ = decoder.decode(block(newer), NOW + 1)  # rebuilt with it: no pause
    assert type(events[0]) is not Event and known.builds == 2


def test_a_field_past_max_values_ends_the_literals():
    known = KnownLabels(max_values=5, rebuild_every=0.0)
    decoder = whole_block_decoder(known)
    decoder.decode(block(EVENTS), NOW)
    assert decoder.decode(block(EVENTS), NOW)[0][0].__class__ is not Event
    many = [{**EVENTS[0], "workflow": f"w{i}"} for i in range(8)]
    events, _, _ = decoder.decode(block(many), NOW)
    assert known.full and known.literals is None
    assert [e.workflow for e in events] == [f"w{i}" for i in range(8)]
    assert decoder.decode(block(EVENTS), NOW + 100)[0][0].__class__ is Event


def test_refused_events_are_named_as_the_plain_decoder_names_them():
    decoder = whole_block_decoder(KnownLabels(rebuild_every=0.0))
    decoder.decode(block(EVENTS), NOW)
    bad = [*EVENTS[:3], {**EVENTS[0], "type": "Not.Valid"}, {**EVENTS[1], "input_tokens": -1}, *EVENTS[3:6]]
    for items in (block(bad), lines(*bad)):
        assert decoder.decode(items, NOW) == plain(items)
        assert [r.reason for r in decoder.decode(items, NOW)[2]] == ["invalid_type", "invalid_field"]


_label = st.sampled_from(["a", "b", "agent-1", "gpt-4o", "x\\u0041y", 'q"t', "", "tab\\tbed"])  # x\\u0041y: sent as an escape (xAy)
_event = st.fixed_dictionaries(
    {"type": st.sampled_from(["llm.call", "tool.call", "agent.failed", "Bad"])},
    optional={"agent": _label, "workflow": _label, "model": _label, "tool": _label, "severity": st.sampled_from(["info", "error"]), "success": st.booleans()},
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_event, min_size=1, max_size=12), min_size=1, max_size=6))
def test_literal_decoders_decode_as_the_plain_decoder_does(reads):
    """Any reads, decoded by one decoder whose literals are built after each read, give what a
    decoder without literals gives: the same events, rejections and label values."""
    decoder = whole_block_decoder(KnownLabels(rebuild_every=0.0, pause_after_miss=0.0))
    for events in reads:
        items = b"\n".join(json.dumps({"timestamp": NOW, **e}, separators=(",", ":")).encode().replace(b"\\\\u", b"\\u") for e in events) + b"\n"
        got = decoder.decode(LineBlock(items), NOW)
        want = plain(LineBlock(items))
        assert (got[0], list(got[1]), got[2]) == (want[0], list(want[1]), want[2])
        assert [msgspec.structs.astuple(e) for e in got[0]] == [msgspec.structs.astuple(e) for e in want[0]]
