"""The dependency-free contract agrees with the sidecar's msgspec decoder."""

import json
import math
from datetime import datetime, timezone

import msgspec
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sidecar import contract
from sidecar.protocol import REASONS, EventDecoder
from sidecar.types import Event

NOW = 1_790_000_000.0

_KIND_OF_TYPE = {
    msgspec.inspect.StrType: contract.STR,
    msgspec.inspect.IntType: contract.COUNT,
    msgspec.inspect.FloatType: contract.AMOUNT,
    msgspec.inspect.BoolType: contract.BOOL,
    msgspec.inspect.LiteralType: contract.SEVERITY,
}


def _kind(field: msgspec.inspect.Field) -> str:
    types = [t for t in field.type.types if not isinstance(t, msgspec.inspect.NoneType)]
    if any(isinstance(t, msgspec.inspect.DateTimeType) for t in types):
        return contract.TIMESTAMP
    (only,) = types
    if isinstance(only, (msgspec.inspect.FloatType, msgspec.inspect.IntType)):
        assert only.ge == 0 and only.le == contract.MAXIMUM[field.name], field.name
    if isinstance(only, msgspec.inspect.LiteralType):
        assert set(only.values) == set(contract.SEVERITIES)
    return _KIND_OF_TYPE[type(only)]


def test_the_decoders_struct_is_built_from_the_contract():
    fields = msgspec.inspect.type_info(Event).fields
    assert fields[0].name == "type" and fields[0].required
    assert {f.name: _kind(f) for f in fields[1:]} == contract.FIELDS
    assert set(contract.MAXIMUM) == {n for n, k in contract.FIELDS.items() if k in (contract.AMOUNT, contract.COUNT)}


def test_the_static_view_of_event_for_mypy_names_the_contracts_fields():
    """types.py declares Event for mypy only (the decoder builds it from FIELDS): same names."""
    import ast
    import inspect

    from sidecar import types

    tree = ast.parse(inspect.getsource(types))
    (stub,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Event"]
    names = [n.target.id for n in stub.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    assert names == ["type", *contract.FIELDS]
    static = {n.target.id: ast.unparse(n.annotation) for n in stub.body if isinstance(n, ast.AnnAssign)}
    python_type = {contract.STR: "str", contract.AMOUNT: "float", contract.COUNT: "int", contract.BOOL: "bool"}
    for name, kind in contract.FIELDS.items():
        if kind in python_type:
            assert static[name] == f"{python_type[kind]} | None", name


@pytest.mark.untraced
def test_the_sdk_can_import_the_contract_without_msgspec():
    import subprocess
    import sys

    code = "import sys; sys.modules['msgspec'] = None; import sidecar.contract as c; assert c.problem('a', {}) is None"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_protocol_and_types_still_export_the_contract_names():
    from sidecar import protocol, types

    assert protocol.MAX_TYPE_LENGTH == contract.MAX_TYPE_LENGTH
    assert protocol.TYPE_PATTERN is contract.TYPE_PATTERN
    assert protocol.valid_type is contract.valid_type and protocol.is_failure_type is contract.is_failure_type
    assert types.SEVERITIES == contract.SEVERITIES


def test_the_default_socket_is_the_configs_default():
    from sidecar.config import ListenConfig

    assert ListenConfig().unix == contract.DEFAULT_SOCKET


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("agent", 3, "`agent` must be a string"),
        ("duration_ms", -1, "finite number >= 0"),
        ("duration_ms", math.inf, "at most 1e+12"),
        ("duration_ms", 1e12 + 1, "at most 1e+12"),
        ("cost_usd", 2e9, "at most 1e+09"),
        ("input_tokens", 10**12 + 1, "at most 1e+12"),
        ("output_tokens", 10**400, "..."),
        ("duration_ms", math.nan, "finite number >= 0"),
        ("cost_usd", True, "finite number >= 0"),
        ("input_tokens", 1.5, "integer >= 0"),
        ("tokens", -2, "integer >= 0"),
        ("tokens", 5.0, "integer >= 0"),
        ("success", 1, "true or false"),
        ("severity", "fatal", "one of debug, info"),
        ("timestamp", "yesterday", "RFC 3339"),
        ("timestamp", "2026-01-01T00:00:00", "RFC 3339"),  # no zone
        ("timestamp", -5, "epoch seconds >= 0"),
    ],
)
def test_field_problem_names_the_field_and_the_rule(name, value, needle):
    assert needle in contract.field_problem(name, value)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ([1], "not_object"),
        ({"agent": "a"}, "missing_type"),
        ({"type": 1}, "invalid_type"),
        ({"type": "a", "agent": 1}, "invalid_field"),
        ({"type": "a", "cost_usd": 1e300}, "out_of_range"),
        ({"type": "a", "timestamp": "now"}, "bad_timestamp"),
    ],
)
def test_check_gives_the_reason_label_of_each_rule(event, reason):
    assert contract.check(event)[0] == reason
    assert set(contract.CHECK_REASONS) <= set(REASONS)


def test_magnitudes_at_the_limits_keep_every_sum_finite():
    """A sum of a huge number of maximal values stays finite (and JSON-safe)."""
    for name, limit in contract.MAXIMUM.items():
        assert contract.field_problem(name, limit) is None
        assert math.isfinite(limit * 1e290), name


def test_w3c_ids():
    assert contract.w3c_trace_id("0af7651916cd43dd8448eb211c80319c")
    assert contract.w3c_span_id("b7ad6b7169203331")
    bad = ["", "0" * 32, "0AF7651916CD43DD8448EB211C80319C", "0af7651916cd43dd8448eb211c80319c\n", "t-1", "g" * 32, "a" * 33, None]
    assert not any(contract.w3c_trace_id(v) for v in bad)
    assert not any(contract.w3c_span_id(v) for v in ["0" * 16, "b7ad6b716920333", "b7ad6b7169203331\x00", "b7ad6b7169203331" * 2])


_HEX = "0123456789abcdef"
_ID_PARTS = st.one_of(
    st.text(_HEX, min_size=16, max_size=16), st.text(_HEX, min_size=32, max_size=32),  # W3C-shaped
    st.sampled_from(["0" * 16, "0" * 32, "0AF7651916CD43DD", "0af7651916cd43d\n", "\n" * 16, "\n" * 32, "g" * 32]),
    st.text(_HEX + "\n\x00G", min_size=15, max_size=33), st.text(max_size=40),
)


@given(st.lists(_ID_PARTS, max_size=12), st.sampled_from([16, 32]))
@example(["a" * 31, "b" * 33], 32)  # hex, of the right total length, but not each `length` long
@example(["a" * 15, "b" * 17], 16)
def test_the_batch_check_of_ids_says_what_the_check_of_each_says(values, length):
    one = contract.w3c_trace_id if length == 32 else contract.w3c_span_id
    assert contract.all_w3c_ids(values, length) == all(one(v) for v in values)


def test_unknown_fields_and_nulls_pass():
    assert contract.problem("tool.called", {"payload": {"x": [1]}, "agent": None}) is None


def test_timestamps_in_every_accepted_form_become_epoch_seconds():
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert contract.timestamp_seconds(when) == when.timestamp()
    assert contract.timestamp_seconds("2026-01-01T00:00:00Z") == when.timestamp()
    assert contract.timestamp_seconds(5) == 5.0
    assert contract.timestamp_seconds(datetime(2026, 1, 1)) is None


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(list(contract.SEVERITIES) + ["2026-01-01T00:00:00+02:00", "2026-01-01T00:00:00"]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.one_of(st.sampled_from(["llm.call", "agent.failed", "Bad", "a..b", "x" * 129]), st.text(max_size=6)),
    fields=st.dictionaries(st.sampled_from(sorted(contract.FIELDS) + ["payload"]), _values, max_size=4),
)
def test_the_client_rules_accept_exactly_what_the_sidecar_accepts(event_type, fields):
    ts = fields.get("timestamp")
    assume(not (isinstance(ts, (int, float)) and ts > NOW + 300))  # the sidecar's clock decides that one
    line = json.dumps({"type": event_type, **fields}).encode()
    events, _, rejected = EventDecoder().decode([line], NOW)
    assert (contract.problem(event_type, fields) is None) == bool(events), (line, rejected)
