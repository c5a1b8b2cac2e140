import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.protocol import REASONS, EventDecoder, LineFramer, valid_type

NOW = 1_790_000_000.0


def decode(*lines: bytes):
    return EventDecoder(max_clock_skew=300).decode(list(lines), NOW)


@pytest.mark.parametrize(
    "line, reason, mentions",
    [
        (b'{"type": "llm.call"', "invalid_json", "truncated"),
        (b"not json", "invalid_json", "malformed"),
        (b'{"type": "llm.call", "x": NaN}', "invalid_json", "malformed"),
        (b'\xef\xbb\xbf{"type": "llm.call"}', "invalid_json", "malformed"),
        (b'{"type": "llm.call", "agent": "\xff\xfe"}', "invalid_utf8", "UTF-8"),
        (b'{"type": "llm.call", "payload": "\xc3"}', "invalid_utf8", "UTF-8"),
        (b"[1, 2]", "not_object", "object"),
        (b'"llm.call"', "not_object", "object"),
        (b"{}", "missing_type", "`type`"),
        (b'{"agent": "planner"}', "missing_type", "`type`"),
        (b'{"type": 5}', "invalid_type", "$.type"),
        (b'{"type": null}', "invalid_type", "$.type"),
        (b'{"type": ""}', "invalid_type", "dotted lower-case"),
        (b'{"type": "LLM.Call"}', "invalid_type", "dotted lower-case"),
        (b'{"type": "llm..call"}', "invalid_type", "dotted lower-case"),
        (b'{"type": "' + b"a" * 129 + b'"}', "invalid_type", "128"),
        (b'{"type": "llm.call", "duration_ms": -1}', "invalid_field", "$.duration_ms"),
        (b'{"type": "llm.call", "duration_ms": "fast"}', "invalid_field", "$.duration_ms"),
        (b'{"type": "llm.call", "duration_ms": 1e999}', "invalid_field", "$.duration_ms"),
        (b'{"type": "llm.call", "cost_usd": -0.5}', "invalid_field", "$.cost_usd"),
        (b'{"type": "llm.call", "input_tokens": 1.5}', "invalid_field", "$.input_tokens"),
        (b'{"type": "llm.call", "output_tokens": -3}', "invalid_field", "$.output_tokens"),
        (b'{"type": "llm.call", "tokens": "many"}', "invalid_field", "$.tokens"),
        (b'{"type": "llm.call", "severity": "fatal"}', "invalid_field", "$.severity"),
        (b'{"type": "llm.call", "success": "yes"}', "invalid_field", "$.success"),
        (b'{"type": "llm.call", "agent": 7}', "invalid_field", "$.agent"),
        (b'{"type": "llm.call", "timestamp": "yesterday"}', "bad_timestamp", "RFC3339"),
        (b'{"type": "llm.call", "timestamp": "2026-11-26T08:00:00"}', "bad_timestamp", "timezone"),
        (b'{"type": "llm.call", "timestamp": -5}', "bad_timestamp", "negative"),
        (b'{"type": "llm.call", "timestamp": 1790000400}', "future_timestamp", "max_clock_skew"),
        (b'{"type": "llm.call", "timestamp": "2099-01-01T00:00:00Z"}', "future_timestamp", "ahead"),
    ],
)
def test_bad_event_is_rejected_with_a_reason_that_names_the_problem(line, reason, mentions):
    events, raws, rejected = decode(line)
    assert events == [] and raws == []
    assert [(r.index, r.reason) for r in rejected] == [(0, reason)]
    assert mentions in rejected[0].message
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


def test_framer_drops_an_oversized_line_without_losing_the_next_one():
    f = LineFramer(10)
    assert f.feed(b"x" * 25) == ([], 1)  # too long already, still no newline
    assert f.feed(b"y" * 1000) == ([], 0)  # still the same line: counted once
    assert f.feed(b"zz\nok\n" + b"w" * 11 + b"\nfine\n") == ([b"ok", b"fine"], 1)
    assert f.feed(b"0123456789") == ([], 0)  # exactly the limit is allowed
    assert f.feed(b"\n") == ([b"0123456789"], 0)


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
        assert rejected[0].reason == "invalid_field"
