"""The event contract in plain Python: names, kinds and rules, with no dependencies.

The sidecar's decoder (`protocol`, `types`) enforces these rules with msgspec; the
client SDK (`sidecar.client`), which must import with the standard library alone,
checks them with `problem()` before an event leaves the app. Both import the
constants from here, and a test holds `FIELDS` and `types.Event` in step.
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
TYPE_RULE = f"`type` must be a dotted lower-case name of at most {MAX_TYPE_LENGTH} characters"


def is_failure_type(event_type: str) -> bool:
    return event_type.endswith(".failed")


def valid_type(event_type: str) -> bool:
    return len(event_type) <= MAX_TYPE_LENGTH and TYPE_PATTERN.match(event_type) is not None


def _number(value: Any) -> bool:
    # bool is an int in Python but `true` in JSON, which the sidecar refuses for a number.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def field_problem(name: str, value: Any) -> str | None:
    """Why `value` is not acceptable for the known field `name`, or None. Unknown names pass."""
    kind = FIELDS.get(name)
    if kind is None or value is None:
        return None
    if kind == STR:
        return None if isinstance(value, str) else f"`{name}` must be a string, not {type(value).__name__}"
    if kind == AMOUNT:
        if _number(value) and 0 <= value <= _MAX_FLOAT:
            return None
        return f"`{name}` must be a finite number >= 0, not {value!r}"
    if kind == COUNT:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return None
        return f"`{name}` must be an integer >= 0, not {value!r}"
    if kind == BOOL:
        return None if isinstance(value, bool) else f"`{name}` must be true or false, not {value!r}"
    if kind == SEVERITY:
        return None if value in SEVERITIES else f"`severity` must be one of {', '.join(SEVERITIES)}, not {value!r}"
    # TIMESTAMP
    if timestamp_seconds(value) is None:
        return f"`timestamp` must be epoch seconds >= 0 or an RFC 3339 time with a zone, not {value!r}"
    return None


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


def problem(event_type: Any, fields: dict[str, Any]) -> str | None:
    """The first reason the sidecar would reject this event, or None when it would accept it.

    Covers the rules that do not depend on the sidecar's clock (a timestamp too far in the
    future is judged there against `ingest.max_clock_skew`).
    """
    if not isinstance(event_type, str) or not valid_type(event_type):
        return TYPE_RULE
    for name, value in fields.items():
        reason = field_problem(name, value)
        if reason is not None:
            return reason
    return None
