import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol import BLOCK_MIN_BYTES, REASONS, EventDecoder, LineBlock, LineFramer, valid_type

NOW = 1_790_000_000.0


def decode(*lines: bytes):
    return EventDecoder(max_clock_skew=300).decode(list(lines), NOW)


# The messages come from the contract (sidecar/contract.py), not from msgspec's wording: each
# names the field and the rule.
@pytest.mark.parametrize(
    "line, reason, mentions",
    [
        (b'{"type": "llm.call"', "invalid_json", "truncated"),
        (b"not json", "invalid_json", "malformed"),
        (b'{"type": "llm.call", "x": NaN}', "invalid_json", "malformed"),
        (b'\xef\xbb\xbf{"type": "llm.call"}', "invalid_json", "malformed"),
        (b'{"type": 5, "agent": ', "invalid_json", "truncated"),  # the typed decode stops at `type`
        (b'{"type": "llm.call", "agent": "\xff\xfe"}', "invalid_utf8", "UTF-8"),
        (b'{"type": "llm.call", "payload": "\xc3"}', "invalid_utf8", "UTF-8"),
        (b"[1, 2]", "not_object", "an array"),
        (b'"llm.call"', "not_object", "a string"),
        (b"null", "not_object", "null"),
        (b"{}", "missing_type", "`type`"),
        (b'{"agent": "planner"}', "missing_type", "`type`"),
        (b'{"type": 5}', "invalid_type", "`type` must be"),
        (b'{"type": null}', "invalid_type", "not None"),
        (b'{"type": ""}', "invalid_type", "dotted lower-case"),
        (b'{"type": "LLM.Call"}', "invalid_type", "dotted lower-case"),
        (b'{"type": "llm..call"}', "invalid_type", "dotted lower-case"),
        (b'{"type": "' + b"a" * 129 + b'"}', "invalid_type", "128"),
        (b'{"type": "llm.call", "duration_ms": -1}', "invalid_field", "`duration_ms` must be a finite number >= 0"),
        (b'{"type": "llm.call", "duration_ms": "fast"}', "invalid_field", "`duration_ms`"),
        (b'{"type": "llm.call", "cost_usd": -0.5}', "invalid_field", "`cost_usd`"),
        (b'{"type": "llm.call", "input_tokens": 1.5}', "invalid_field", "`input_tokens` must be an integer"),
        (b'{"type": "llm.call", "output_tokens": -3}', "invalid_field", "`output_tokens`"),
        (b'{"type": "llm.call", "tokens": "many"}', "invalid_field", "`tokens`"),
        (b'{"type": "llm.call", "severity": "fatal"}', "invalid_field", "`severity` must be one of"),
        (b'{"type": "llm.call", "success": "yes"}', "invalid_field", "`success` must be true or false"),
        (b'{"type": "llm.call", "agent": 7}', "invalid_field", "`agent` must be a string"),
        (b'{"type": "llm.call", "agent": "a", "trace_id": ["x"]}', "invalid_field", "`trace_id` must be a string"),
        (b'{"type": "llm.call", "duration_ms": 1e999}', "out_of_range", "`duration_ms` must be at most 1e+12"),
        (b'{"type": "llm.call", "duration_ms": 1000000000001}', "out_of_range", "`duration_ms` must be at most"),
        (b'{"type": "llm.call", "cost_usd": 1.7976931348623157e308}', "out_of_range", "`cost_usd` must be at most 1e+09"),
        (b'{"type": "llm.call", "input_tokens": 1000000000001}', "out_of_range", "`input_tokens` must be at most"),
        (b'{"type": "llm.call", "tokens": ' + b"9" * 400 + b"}", "out_of_range", "..."),  # not echoed in full
        (b'{"type": "llm.call", "timestamp": "yesterday"}', "bad_timestamp", "RFC 3339"),
        (b'{"type": "llm.call", "timestamp": "2026-11-26T08:00:00"}', "bad_timestamp", "with a zone"),
        (b'{"type": "llm.call", "timestamp": -5}', "bad_timestamp", "negative"),
        (b'{"type": "llm.call", "timestamp": 1e999}', "bad_timestamp", "`timestamp`"),
        (b'{"type": "llm.call", "timestamp": "1969-12-31T23:59:59Z"}', "bad_timestamp", "negative"),
        (b'{"type": "llm.call", "timestamp": 1790000400}', "future_timestamp", "max_clock_skew"),
        (b'{"type": "llm.call", "timestamp": "2099-01-01T00:00:00Z"}', "future_timestamp", "ahead"),
    ],
)
def test_bad_event_is_rejected_with_a_reason_that_names_the_problem(line, reason, mentions):
    events, raws, rejected = decode(line)
    assert events == [] and raws == []
    assert [(r.index, r.reason) for r in rejected] == [(0, reason)]
    assert mentions in rejected[0].message
    assert len(rejected[0].message) < 200  # a long value is not echoed back whole
    assert reason in REASONS


def test_good_event_is_normalised():
    line = json.dumps(
        {"type": "llm.call", "timestamp": "2026-09-01T08:00:00.5+02:00", "agent": "planner", "duration_ms": 12, "payload": {"k": [1]}, "extra": 1}
    ).encode()
    (ev,), (raw,), rejected = decode(line)
    assert rejected == []
    assert raw == line  # the bytes as sent, unknown fields included, for the live tail
    assert ev.timestamp == datetime(2026, 9, 1, 6, 0, 0, 500000, tzinfo=timezone.utc).timestamp()
    assert (ev.severity, ev.success, ev.agent, ev.duration_ms) == ("info", True, "planner", 12.0)


def test_missing_timestamp_defaults_to_receive_time_and_clock_skew_is_allowed():
    (a, b), _, rejected = decode(b'{"type": "a"}', b'{"type": "b", "timestamp": 1790000299}')
    assert rejected == []
    assert a.timestamp == NOW and b.timestamp == 1790000299.0


@pytest.mark.parametrize("type_, severity, success", [("agent.failed", "error", False), ("workflow.failed", "error", False), ("tool.call", "info", True)])
def test_failed_types_default_to_error_and_unsuccessful(type_, severity, success):
    (ev,), _, _ = decode(json.dumps({"type": type_}).encode())
    assert (ev.severity, ev.success) == (severity, success)


def test_explicit_severity_and_success_win_over_defaults():
    (ev,), _, _ = decode(b'{"type": "agent.failed", "severity": "warning", "success": true}')
    assert (ev.severity, ev.success) == ("warning", True)


def test_good_events_beside_bad_ones_are_all_kept_in_order():
    lines = [b'{"type": "a.one"}', b"garbage", b'{"type": "a.two"}', b"{}", b'{"type": "a.three"}']
    events, raws, rejected = decode(*lines)
    assert [e.type for e in events] == ["a.one", "a.two", "a.three"]
    assert [r.index for r in rejected] == [1, 3]


@pytest.mark.parametrize("name", ["llm.call", "workflow.started", "a", "my_app.tool-call.v2", "x" * 128])
def test_valid_type_names(name):
    assert valid_type(name)


def test_framer_splits_lines_across_reads_and_skips_blank_ones():
    f = LineFramer(100)
    assert f.feed(b'{"type":"a"}\n{"ty') == ([b'{"type":"a"}'], 0)
    assert f.feed(b'pe":"b"}\r\n\n  \n{"type"') == ([b'{"type":"b"}\r'], 0)
    assert f.finish() == b'{"type"'
    assert f.finish() == b""
    assert f.feed(b'{"type":"c"}\n \t\n{"type":"d"}\n') == ([b'{"type":"c"}', b'{"type":"d"}'], 0)  # blank, not empty


def test_framer_drops_an_oversized_line_without_losing_the_next_one():
    f = LineFramer(10)
    assert f.feed(b"x" * 25) == ([], 1)  # too long already, still no newline
    assert f.feed(b"y" * 1000) == ([], 0)  # still the same line: counted once
    assert f.feed(b"zz\nok\n" + b"w" * 11 + b"\nfine\n") == ([b"ok", b"fine"], 1)
    assert f.feed(b"0123456789") == ([], 0)  # exactly the limit is allowed
    assert f.feed(b"\n") == ([b"0123456789"], 0)


def test_framer_counts_a_line_made_long_by_the_rest_of_the_last_read():
    f = LineFramer(8192)  # large enough that lines are proven short by blocks (LineFramer._all_short)
    assert f.feed(b"x" * 6000) == ([], 0)
    assert f.feed(b"y" * 3000 + b"\nok\n") == ([b"ok"], 1)
    assert f.feed(b"z" * 8192 + b"\n" + b"w" * 8193 + b"\n") == ([b"z" * 8192], 1)  # the limit is allowed


def test_framer_hands_a_usual_read_on_unsplit_and_the_rest_as_feed_does():
    f = LineFramer(8192)  # proven short by blocks: feed_block can leave the lines unsplit
    block, oversized = f.feed_block(b'{"type":"a"}\n{"type":"b"}\r\n{"ty')
    assert isinstance(block, LineBlock) and oversized == 0
    assert block.data == b'{"type":"a"}\n{"type":"b"}\r\n' and block._lines is None
    assert list(block) == [b'{"type":"a"}', b'{"type":"b"}\r'] and block[1:] == [b'{"type":"b"}\r']
    block, _ = f.feed_block(b'pe":"c"}\n\n  \n')
    assert block.data == b'{"type":"c"}\n\n  \n' and list(block) == [b'{"type":"c"}']  # blank lines left out, as feed does
    block, _ = f.feed_block(b" \n\n")
    assert not block and list(block) == []  # only blank lines: nothing delivered, told without splitting
    assert f.feed_block(b"x" * 9000 + b"\nok\n") == ([b"ok"], 1)  # a long line: as feed gives it
    assert LineFramer(100).feed_block(b'{"type":"a"}\n') == ([b'{"type":"a"}'], 0)  # too small a limit for blocks


def test_framer_tail_of_blank_is_empty():
    f = LineFramer(10)
    f.feed(b"{}\n   ")
    assert f.finish() == b""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_bytes_are_accepted_or_rejected_never_raised(lines):
    events, raws, rejected = decode(*lines)
    assert len(events) + len(rejected) == len(lines)
    assert len(raws) == len(events)
    assert all(r.reason in REASONS for r in rejected)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["agent", "workflow", "model", "run_id", "error", "duration_ms", "cost_usd", "input_tokens", "payload", "zzz"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)),
    )
)
def test_arbitrary_json_objects_are_accepted_or_rejected_with_a_reason(fields):
    line = json.dumps({"type": "llm.call", **fields}).encode()
    events, _, rejected = decode(line)
    assert len(events) + len(rejected) == 1
    if rejected:
        assert rejected[0].reason in ("invalid_field", "out_of_range")


# One input per reason label. A msgspec release that words an error differently, or a reason
# that is renamed or no longer reached, fails here rather than moving a metric label silently.
REASON_EXAMPLES = {
    "invalid_json": (b'{"type": "a"', {}),
    "invalid_utf8": (b'{"type": "a", "agent": "\xff"}', {}),
    "not_object": (b"[[1]]", {}),
    "missing_type": (b'{"agent": "a"}', {}),
    "invalid_type": (b'{"type": "A"}', {}),
    "invalid_field": (b'{"type": "a", "success": 1}', {}),
    "out_of_range": (b'{"type": "a", "cost_usd": 1e10}', {}),
    "bad_timestamp": (b'{"type": "a", "timestamp": "soon"}', {}),
    "future_timestamp": (b'{"type": "a", "timestamp": 4000000000}', {}),
    "too_large": (b'{"type": "a", "agent": "' + b"x" * 5000 + b'"}\n', {"content-type": "application/x-ndjson"}),
    "bad_encoding": (b"not gzip", {"content-encoding": "gzip"}),
}


def test_every_reason_label_has_an_example():
    assert set(REASON_EXAMPLES) == set(REASONS)


@pytest.fixture(scope="module")
def live():
    import httpx

    from sidecar.testing import running_sidecar

    with running_sidecar(**{"ingest.max_event_bytes": 4096}) as s, httpx.Client(base_url=s.url) as client:
        s.client = client
        yield s


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_label_is_what_a_real_sidecar_answers_and_counts(live, reason):
    body, headers = REASON_EXAMPLES[reason]
    labels = {"transport": "http", "reason": reason}
    before = live.value("sidecar_events_rejected_total", labels) or 0
    r = live.client.post("/v1/events", content=body, headers={"content-type": "application/json", **headers})
    assert r.status_code in (202, 400, 415), r.text
    assert [e["error"].split(":")[0] for e in r.json()["errors"]] == [reason]
    assert live.value("sidecar_events_rejected_total", labels) == before + 1


def test_the_decoders_type_cache_keeps_no_long_names():
    """Hostile senders with many distinct long type names: all rejected, none cached whole."""
    import tracemalloc

    decoder = EventDecoder()
    lines = [b'{"type": "' + b"%05d" % i + b"a" * 20_000 + b'"}' for i in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _, _, rejected = decoder.decode(lines, NOW)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [r.reason for r in rejected] == ["invalid_type"] * 300
    assert kept < 300 * 20_000 / 10, f"{kept} bytes kept for 300 rejected names of 20 KB"
    decoder.decode([b'{"type": "t%d"}' % i for i in range(20_000)], NOW)
    assert len(decoder._types) == 10_000  # and a bounded number of short ones


@pytest.mark.parametrize("first_batch", [[], [b'{"type": ""}']], ids=["bulk", "line_by_line"])
def test_label_values_are_shared_between_events_and_batches(first_batch):
    """Equal types, agents, workflows and models are one str object, whichever path decoded them."""
    decoder = EventDecoder()
    line = b'{"type": "llm.call", "agent": "planner", "workflow": "triage", "model": "gpt-4o", "run_id": "r"}'
    first, _, _ = decoder.decode([*first_batch, line, line], NOW)
    later, _, _ = decoder.decode([line], NOW)
    a, b, c = first[-2], first[-1], later[0]
    for name in ("type", "agent", "workflow", "model"):
        assert getattr(a, name) is getattr(b, name) is getattr(c, name), name
    assert a.run_id is not c.run_id  # ids are not labels: not kept
    assert (c.type, c.agent, c.workflow, c.model) == ("llm.call", "planner", "triage", "gpt-4o")


def test_the_shared_label_values_stay_bounded():
    """Hostile senders with long or ever-new label values: long ones are never kept, and the
    number kept stays at most MAX_SHARED (the values still arrive intact)."""
    from sidecar.protocol import MAX_SHARED, MAX_SHARED_LENGTH

    decoder = EventDecoder()
    long_agent = "a" * (MAX_SHARED_LENGTH + 1)
    long_line, fits_line = (b'{"type": "llm.call", "agent": "%s"}' % (c * n).encode() for c, n in (("a", MAX_SHARED_LENGTH + 1), ("b", MAX_SHARED_LENGTH)))
    (first, fits), _, _ = decoder.decode([long_line, fits_line], NOW)
    (again, fits_again), _, _ = decoder.decode([long_line, fits_line], NOW)
    assert first.agent == again.agent == long_agent
    assert first.agent is not again.agent and long_agent not in decoder._shared  # not kept past its batch
    assert fits.agent is fits_again.agent
    for start in range(0, MAX_SHARED + 1000, 1000):
        batch = [b'{"type": "llm.call", "agent": "agent-%d"}' % i for i in range(start, start + 1000)]
        events, _, _ = decoder.decode(batch, NOW)
        assert [e.agent for e in events] == [f"agent-{i}" for i in range(start, start + 1000)]
        assert len(decoder._shared) <= MAX_SHARED


# The usual batch (ASCII, valid, known types, stamped within the clock rules) is decoded in bulk;
# any other goes line by line. Both must give the same events, raws and rejections.
USUAL = [
    {"type": "llm.call", "timestamp": NOW - 5, "agent": "a", "duration_ms": 12.5},
    {"type": "tool.failed", "timestamp": NOW, "tool": "grep", "error": "boom"},
    {"type": "tool.failed", "timestamp": NOW, "severity": "warning", "success": True},
    {"type": "agent.completed", "timestamp": NOW + 299, "severity": "debug", "success": False},
    {"type": "llm.call", "timestamp": 0, "input_tokens": 3, "payload": {"x": [1, "\\u00e9"]}},
]


def both_ways(lines, now=NOW):
    warm = EventDecoder(max_clock_skew=300)
    warm.decode(lines, now)  # every type seen: a usual batch takes the bulk path from now on
    bulk = warm.decode(lines, now)
    fresh = EventDecoder(max_clock_skew=300)
    each = fresh._decode_each(list(lines), now, None)
    fresh._intern(each[0])  # severity and success, as decode fills them in after the line-by-line path
    return bulk, each


def test_the_bulk_path_gives_what_the_line_by_line_path_gives():
    lines = [json.dumps(e).encode() for e in USUAL] * 20
    decoder = EventDecoder(max_clock_skew=300)
    decoder.decode(lines, NOW)
    parsed = decoder._parse_all(lines)
    assert parsed is not None and decoder._in_time(parsed, NOW) and decoder._intern(parsed) is not None  # a usual batch
    bulk, each = both_ways(lines)
    assert bulk == each
    severities = [(e.severity, e.success) for e in bulk[0][:5]]
    assert severities == [("info", True), ("error", False), ("warning", True), ("debug", False), ("info", True)]


@pytest.mark.parametrize(
    "odd, reason",
    [
        ({"type": "llm.call", "timestamp": NOW + 301}, "future_timestamp"),
        ({"type": "llm.call", "timestamp": -1}, "bad_timestamp"),
        ({"type": "llm.call"}, None),  # stamped on receipt
        ({"type": "llm.call", "timestamp": "2026-09-21T12:00:00Z"}, None),  # a datetime: converted
        ({"type": "Bad.Type", "timestamp": NOW}, "invalid_type"),
        ({"type": "llm.call", "timestamp": NOW, "duration_ms": -1}, "invalid_field"),
        ({"type": "llm.call", "timestamp": NOW, "agent": "caf\u00e9"}, None),  # not ASCII
    ],
)
def test_a_batch_with_one_unusual_line_goes_line_by_line_and_keeps_the_rest(odd, reason):
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in [*USUAL, odd, *USUAL]]
    (events, raws, rejected), each = both_ways(lines)
    assert (events, raws, rejected) == each
    assert len(events) == 10 + (reason is None)
    assert [(r.index, r.reason) for r in rejected] == ([] if reason is None else [(5, reason)])
    if reason is None:
        assert isinstance(events[5].timestamp, float) and events[5].timestamp > 0


def test_invalid_utf8_in_a_skipped_field_is_refused_in_a_batch_of_known_types():
    lines = [json.dumps(e).encode() for e in USUAL]
    bad = b'{"type": "llm.call", "timestamp": %d, "payload": "\xc3"}' % NOW
    (events, _, rejected), each = both_ways([*lines, bad])
    assert [(r.index, r.reason) for r in rejected] == [(5, "invalid_utf8")]
    assert len(events) == 5


def test_the_decoder_numbers_label_sets_as_the_sinks_would():
    """decode_numbered's numbers are what LabelSets.number gives the accepted events, in order, on
    the bulk path, the line-by-line one, with long labels (-1) and severity or success sent or not."""
    from sidecar.sinks.labelsets import LabelSets

    ours, reference = LabelSets(), LabelSets()
    decoder = EventDecoder(label_sets=ours)
    long_agent = "x" * 200
    kinds = [
        {"type": "llm.call", "agent": "a"}, {"type": "agent.failed", "agent": "a"}, {"type": "llm.call", "agent": "b", "tool": "t"},
        {"type": "llm.call", "agent": "a", "success": False}, {"type": "llm.call", "agent": "a", "severity": "warning"},
        {"type": "llm.call", "agent": "a", "severity": "info", "success": True},  # sent as it is filled in: the same label set
        {"type": "llm.call", "agent": long_agent}, {"type": "tool.call", "workflow": "w", "model": "m"},
    ]
    reads = [
        [json.dumps(kinds[i % len(kinds)]).encode() for i in range(50)],  # bulk
        [json.dumps(kinds[(3 * i) % len(kinds)]).encode() for i in range(30)] + [b'{"type": ""}'],  # one rejected: line by line
        [json.dumps({**kinds[i % len(kinds)], "type": f"new.t{i % 4}"}).encode() for i in range(20)],  # types not seen yet
    ]
    reads = [[line[:-1] + b', "timestamp": %d}' % NOW for line in lines] for lines in reads]  # stamped: the bulk path can take them
    for lines in reads * 2:
        events, _, _, numbered = decoder.decode_numbered(lines, NOW)
        assert numbered.owner is ours
        assert numbered.numbers == reference.number(events)
        assert all(e.severity is not None and e.success is not None for e in events)
    assert -1 in numbered.numbers and len(ours) == len(reference)
    assert EventDecoder().decode_numbered(reads[0], NOW)[3] is None  # no LabelSets: nothing to number with


def test_the_decoders_label_sets_stay_bounded():
    """Ever-new label sets keep at most MAX_LABEL_ENTRIES of them; long values are never kept."""
    from sidecar.protocol import MAX_LABEL_ENTRIES

    decoder = EventDecoder()
    for start in range(0, MAX_LABEL_ENTRIES + 2000, 1000):
        decoder.decode([b'{"type": "llm.call", "agent": "agent-%d"}' % i for i in range(start, start + 1000)], NOW)
        assert len(decoder._labels) <= MAX_LABEL_ENTRIES
    decoder.decode([b'{"type": "llm.call", "agent": "%s"}' % (b"a" * 129)], NOW)
    assert all(len(raw[1] or "") <= 128 for raw in decoder._labels)


def stamped(*events: dict) -> list[bytes]:
    return [json.dumps({"timestamp": NOW, **e}, separators=(",", ":")).encode() for e in events]


def test_a_usual_read_is_parsed_whole_and_stays_unsplit_and_a_short_one_goes_line_by_line():
    lines = stamped(*({"type": "llm.call", "agent": f"a{i % 7}", "duration_ms": i, "payload": {"n": {"i": i}}} for i in range(600)))
    data = b"\n".join(lines) + b"\n"
    assert len(data) >= BLOCK_MIN_BYTES
    decoder = EventDecoder()
    parsed = []
    parse = decoder._decode_lines
    decoder._decode_lines = lambda data: parsed.append(1) or parse(data)
    events, raws, rejected = decoder.decode(LineBlock(data), NOW)
    assert parsed == [1] and rejected == [] and len(events) == 600
    assert isinstance(raws, LineBlock) and raws._lines is None  # no line split for the batch
    assert raws[42] == lines[42] and list(raws) == lines  # split when asked: the live tail's raws
    assert (events, list(raws), rejected) == EventDecoder().decode(lines, NOW)
    short = b"\n".join(lines[:100]) + b"\n"
    assert len(short) < BLOCK_MIN_BYTES
    events, raws, _ = decoder.decode(LineBlock(short), NOW)
    assert parsed == [1] and len(events) == 100  # line by line, below the size where a block pays
    assert isinstance(raws, LineBlock) and raws._lines is None  # still unsplit: its lines died with the parse


@pytest.mark.parametrize(
    "lines, accepted",
    [
        # A value left open at a line's end, continued by a line that starts with `{`: a `}` must end
        # every line but the last (and so the three values of these lines are not taken for their lines).
        ([b'{"type":"a.b","p":', b'{"x":1}}', b'{"type":"c.d"} {"type":"e.f"}'], 0),
        # An object continued by a line that starts with a comma: a `{` must start every line but the first.
        ([b'{"type":"a.b","p":{"x":1}', b',"y":2}', b'{"type":"c.d"} {"type":"e.f"}'], 0),
        # `}` and `{` across a newline inside an array or an object: not JSON without a comma between.
        ([b'{"type":"a.b","x":[{"y":1}', b'{"z":2}]}', b'{"type":"c.d"} {"type":"e.f"}'], 0),
        ([b'{"type":"a.b","x":{"y":{}', b'{"z":2}}}', b'{"type":"c.d"} {"type":"e.f"}'], 0),
        # An array anywhere else is fine: parsed whole (test_a_read_with_arrays_and_crlf_is_parsed_whole).
        # Two events on one line: as many events as lines.
        ([b'{"type":"c.d"},{"type":"e.f"}', b'{"type":"g.h"}'], 1),
        ([b'{"type":"c.d"}', b'{"type":"e.f"} {"type":"g.h"}'], 1),
        # A string left open: JSON strings hold no raw newline (msgspec checks it, skipped fields too).
        ([b'{"type":"a.b","payload":"x', b'{y","z":1},{"type":"c.d"}'], 0),
        ([b'{"type":"a.b","payload":{"k":"x', b'{y"}},{"type":"c.d"}'], 0),
        ([b"null", b'{"type":"c.d"}'], 1),  # the first line can be any value
        ([b'{"type":"a.b"}', b"null"], 1),
        ([b' {"type":"a.b"}', b'{"type":"c.d"}'], 2),  # a line starting with a space: line by line, both fine
        ([b'{"type":"a.b"}', b"", b"  ", b'{"type":"c.d"}'], 2),
        ([b'{"type":"a.b","p":\r', b'{"x":1}}', b'{"type":"c.d"} {"type":"e.f"}'], 0),  # CRLF: a `}` before the `\r`
        ([b'{"type":"a.b","p":{"x":1}\r', b',"y":2}', b'{"type":"c.d"} {"type":"e.f"}'], 0),
        ([b'{"type":"a.b","payload":"\xff"}', b'{"type":"c.d"}'], 1),  # ASCII only: msgspec skips a payload's bytes unchecked
    ],
)
def test_a_read_whose_lines_join_into_other_values_is_decoded_line_by_line(lines, accepted):
    data = b"\n".join(lines) + b"\n"
    whole = EventDecoder()
    whole.block_min = 0
    events, raws, rejected = whole.decode(LineBlock(data), NOW)
    assert (events, list(raws), rejected) == EventDecoder().decode([line for line in lines if line.strip()], NOW)
    assert len(events) == accepted


def test_a_read_with_arrays_and_crlf_is_parsed_whole():
    """Arrays in payloads, `}` `{` inside strings and CRLF line ends leave a read on the one-call parse."""
    lines = stamped(*({"type": "llm.call", "payload": {"messages": [{"role": "user"}, {"text": "}\\n{"}], "n": [i, [i]]}} for i in range(50)))
    decoder = EventDecoder()
    decoder.block_min = 0
    parsed = []
    parse = decoder._parse_block
    decoder._parse_block = lambda data, literals: parsed.append(parse(data, literals) is not None) or parse(data, literals)
    kinds = set()
    for end in (b"\n", b"\r\n", b"\n", b"\r\n"):
        events, raws, rejected = decoder.decode(LineBlock(end.join(lines) + end), NOW)
        assert parsed.pop() is True and isinstance(raws, LineBlock) and raws._lines is None
        assert (events, list(raws), rejected) == EventDecoder().decode([line + end.strip(b"\n") for line in lines], NOW)
        kinds.add(type(events[0]))
    assert len(kinds) == 2  # by the plain decoder first, then by the literal one (sidecar.known_labels)
