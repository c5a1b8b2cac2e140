"""Round trip: every event the SDK can emit decodes in the sidecar to the same values.

The SDK sends through a real Unix socket (the `capture` server keeps the exact bytes);
the sidecar's own decoder (`protocol.EventDecoder`, what both listeners call) decodes them."""

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sidecar.client import Emitter, InvalidEvent
from sidecar.contract import AMOUNT, BOOL, COUNT, FIELDS, SEVERITIES, SEVERITY, STR, TIMESTAMP, TYPE_PATTERN, timestamp_seconds
from sidecar.protocol import EventDecoder

NOW = time.time()
MAX_FLOAT = 1.7976931348623157e308

zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
KINDS = {
    STR: st.text(max_size=20) | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3),  # lone surrogates too
    AMOUNT: st.floats(0, MAX_FLOAT, allow_nan=False) | st.integers(0, 2**80),
    COUNT: st.integers(0, 2**64),
    BOOL: st.booleans(),
    SEVERITY: st.sampled_from(SEVERITIES),
    # the sidecar judges "too far in the future" by its own clock; the SDK cannot, so stay in the past
    TIMESTAMP: st.floats(0, NOW) | st.datetimes(datetime(1970, 1, 2), datetime(2026, 1, 1), timezones=zones)
    | st.datetimes(datetime(1970, 1, 2), datetime(2026, 1, 1), timezones=zones).map(datetime.isoformat),
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
types = st.from_regex(TYPE_PATTERN, fullmatch=True).filter(lambda t: len(t) <= 128)
fields = st.fixed_dictionaries({}, optional={**{name: KINDS[kind] for name, kind in FIELDS.items()}, "payload": json_values})


def emit_and_capture(capture, event_type, values):
    emitter = Emitter(unix=capture.path, strict=True)
    try:
        emitter.emit(event_type, **dict(values))
    except InvalidEvent:
        emitter.close()
        return None
    assert emitter.close(10), "the SDK could not deliver to a live socket"
    if emitter.drops == {"not_json": 1}:
        return None  # e.g. a lone surrogate: no JSON text can carry it, the SDK drops and counts it
    assert emitter.drops == {}, emitter.drops
    return capture.raw.pop()


@pytest.mark.untraced
@given(event_type=types, values=fields)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_event_the_sdk_emits_decodes_in_the_sidecar_to_the_same_values(capture, event_type, values):
    line = emit_and_capture(capture, event_type, values)
    assume(line is not None)  # the SDK refused it (strict); it never reaches a sidecar
    events, raws, rejected = EventDecoder().decode([line], NOW + 1)
    assert rejected == [], f"the SDK sent what the sidecar rejects: {rejected[0].reason}: {rejected[0].message}"
    ev = events[0]
    assert ev.type == event_type
    for name, value in values.items():
        kind = FIELDS.get(name)
        if name == "payload":
            assert json.loads(raws[0])["payload"] == value
        elif value is None:
            continue
        elif kind == TIMESTAMP:
            assert ev.timestamp == timestamp_seconds(value)
        elif kind == AMOUNT:
            assert getattr(ev, name) == float(value)
        else:
            assert getattr(ev, name) == value, name
    assert ev.severity == values.get("severity") or ("error" if event_type.endswith(".failed") else "info")
