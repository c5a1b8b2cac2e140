"""The event contract in plain Python: names, kinds, limits and rules, with no dependencies.

This module is the one source of the event schema. The sidecar's decoder builds its
msgspec `types.Event` from `FIELDS` and `MAXIMUM`, and names every rejection with
`check()`; the client SDK (`sidecar.client`), which must import with the standard
library alone, checks events with `problem()` before they leave the app.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any

SEVERITIES = ("debug", "info", "warning", "error", "critical")
TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)*\Z")
MAX_TYPE_LENGTH = 128
DEFAULT_SOCKET = "/tmp/agent-sidecar.sock"  # listen.unix's default, where clients look first

# Every optional field the sidecar reads, by kind. Other fields (`payload`, ...) pass through
# untouched to the live tail; they only have to be JSON.
STR, AMOUNT, COUNT, BOOL, SEVERITY, TIMESTAMP = "str", "amount", "count", "bool", "severity", "timestamp"
FIELDS: dict[str, str] = {
    "timestamp": TIMESTAMP,
    "severity": SEVERITY,
    "agent": STR,
    "workflow": STR,
    "model": STR,
    "tool": STR,
    "run_id": STR,
    "invocation_id": STR,
    "trace_id": STR,
    "span_id": STR,
    "session_id": STR,
    "duration_ms": AMOUNT,
    "input_tokens": COUNT,
    "output_tokens": COUNT,
    "tokens": COUNT,
    "cost_usd": AMOUNT,
    "success": BOOL,
    "error": STR,
}

_MAX_FLOAT = sys.float_info.max
# The largest value accepted per numeric field. Far above any real event (a 31-year call,
# a billion dollars, a trillion tokens) and far below the float limit: the sum of 10**290
# maximal events is still finite, so no counter, histogram sum, rate or /v1/stats number can
# become inf (which JSON cannot carry). A count up to 10**12 is also exact in a float cell.
MAX_DURATION_MS = 1e12
MAX_COST_USD = 1e9
MAX_COUNT = 10**12
MAXIMUM: dict[str, float] = {
    "duration_ms": MAX_DURATION_MS,
    "cost_usd": MAX_COST_USD,
    "input_tokens": MAX_COUNT,
    "output_tokens": MAX_COUNT,
    "tokens": MAX_COUNT,
}
TYPE_RULE = f"`type` must be a dotted lower-case name of at most {MAX_TYPE_LENGTH} characters"

# W3C Trace Context ids: lower-case hex, 32 and 16 characters (all zeros is "no id").
# Only such ids become exemplar labels; any other value stays in the event and the tail.
TRACE_ID_PATTERN = re.compile(r"[0-9a-f]{32}\Z")
SPAN_ID_PATTERN = re.compile(r"[0-9a-f]{16}\Z")

# Reasons `check()` gives; `protocol.REASONS` lists them with the transport-level ones.
NOT_OBJECT, MISSING_TYPE, INVALID_TYPE = "not_object", "missing_type", "invalid_type"
INVALID_FIELD, OUT_OF_RANGE, BAD_TIMESTAMP = "invalid_field", "out_of_range", "bad_timestamp"
CHECK_REASONS = (NOT_OBJECT, MISSING_TYPE, INVALID_TYPE, INVALID_FIELD, OUT_OF_RANGE, BAD_TIMESTAMP)


def is_failure_type(event_type: str) -> bool:
    return event_type.endswith(".failed")


def valid_type(event_type: str) -> bool:
    return len(event_type) <= MAX_TYPE_LENGTH and TYPE_PATTERN.match(event_type) is not None


def w3c_trace_id(value: str | None) -> bool:
    """True for a W3C trace id (32 lower-case hex digits, not all zero)."""
    return value is not None and TRACE_ID_PATTERN.match(value) is not None and value != "0" * 32


def w3c_span_id(value: str | None) -> bool:
    """True for a W3C span id (16 lower-case hex digits, not all zero)."""
    return value is not None and SPAN_ID_PATTERN.match(value) is not None and value != "0" * 16


_HEX = b"0123456789abcdef"


def all_w3c_ids(values: list[str], length: int) -> bool:
    """True when every value is a W3C id of `length` (32: trace, 16: span); what w3c_trace_id and
    w3c_span_id say of each, in a few passes of C over the batch (~50 ns per id, against ~600 for a
    regex match per id) for the hot path, which falls back to the per-id check when this is False."""
    if not values:
        return True
    joined = "\n".join(values)
    separators = "\n" * (len(values) - 1)
    return (
        # A newline after each `length` characters, and nothing but hex digits besides those
        # newlines: every id is `length` hex digits.
        len(joined) == (length + 1) * len(values) - 1
        and joined[length :: length + 1] == separators
        and joined.isascii()  # (before encode: a lone surrogate would not encode)
        and joined.encode().translate(None, _HEX) == separators.encode()
        and "0" * length not in joined  # ids are `length` apart: all zeros can only be a whole id
    )


def _number(value: Any) -> bool:
    # bool is an int in Python but `true` in JSON, which the sidecar refuses for a number.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."  # a 64 KiB value must not be echoed back


def field_check(name: str, value: Any) -> tuple[str, str] | None:
    """(reason, message) when `value` is not acceptable for the known field `name`, else None.

    Unknown names and nulls pass. The reason is one of `CHECK_REASONS`.
    """
    kind = FIELDS.get(name)
    if kind is None or value is None:
        return None
    if kind == STR:
        return None if isinstance(value, str) else (INVALID_FIELD, f"`{name}` must be a string, not {type(value).__name__}")
    if kind == AMOUNT or kind == COUNT:
        if not _number(value) or value != value or value < 0:  # NaN is not equal to itself
            what = "a finite number" if kind == AMOUNT else "an integer"
            return INVALID_FIELD, f"`{name}` must be {what} >= 0, not {_shown(value)}"
        if value > MAXIMUM[name]:
            return OUT_OF_RANGE, f"`{name}` must be at most {MAXIMUM[name]:g}, not {_shown(value)}"
        if kind == COUNT and not isinstance(value, int):
            return INVALID_FIELD, f"`{name}` must be an integer >= 0, not {_shown(value)}"
        return None
    if kind == BOOL:
        return None if isinstance(value, bool) else (INVALID_FIELD, f"`{name}` must be true or false, not {_shown(value)}")
    if kind == SEVERITY:
        if value in SEVERITIES:
            return None
        return INVALID_FIELD, f"`severity` must be one of {', '.join(SEVERITIES)}, not {_shown(value)}"
    # TIMESTAMP
    if timestamp_seconds(value) is None:
        return BAD_TIMESTAMP, f"`timestamp` must be epoch seconds >= 0 or an RFC 3339 time with a zone, not {_shown(value)}"
    return None


def field_problem(name: str, value: Any) -> str | None:
    """Why `value` is not acceptable for the known field `name`, or None. Unknown names pass."""
    found = field_check(name, value)
    return None if found is None else found[1]


def timestamp_seconds(value: Any) -> float | None:
    """Epoch seconds for a number, an aware datetime or an RFC 3339 string with a zone; else None."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo is not None else None
    if _number(value) and 0 <= value <= _MAX_FLOAT:  # NaN fails both comparisons
        return float(value)
    return None


def check(event: Any) -> tuple[str, str] | None:
    """(reason, message) for the first rule a decoded JSON value breaks as an event, or None.

    Covers the rules that do not depend on the sidecar's clock (a timestamp too far in the
    future is judged there against `ingest.max_clock_skew`). The decoder calls this on a
    line its fast typed decode refused, so the reason never depends on msgspec's wording.
    """
    found = check_at(event)
    return None if found is None else found[:2]


def check_at(event: Any) -> tuple[str, str, str] | None:
    """`check()` with the JSON path of the offending value (`$`, `$.type`, `$.duration_ms`)."""
    if not isinstance(event, dict):
        return NOT_OBJECT, f"an event must be a JSON object, not {_json_kind(event)}", "$"
    if "type" not in event:
        return MISSING_TYPE, "missing required field `type`", "$"
    event_type = event["type"]
    if not isinstance(event_type, str) or not valid_type(event_type):
        return INVALID_TYPE, f"{TYPE_RULE}, not {_shown(event_type)}", "$.type"
    for name, value in event.items():
        found = field_check(name, value)
        if found is not None:
            return (*found, f"$.{name}")
    return None


def problem(event_type: Any, fields: dict[str, Any]) -> str | None:
    """The first reason the sidecar would reject this event, or None when it would accept it."""
    found = check({**fields, "type": event_type})
    return None if found is None else found[1]


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else type(value).__name__
