"""Build OTLP trace requests for tests with opentelemetry-proto's own classes, and their OTLP/JSON form."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
NOW_NS = int(time.time() * 1e9)


def value(v: Any) -> AnyValue:
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=value(x)) for k, x in v.items()]))
    return AnyValue(string_value=str(v))


def attributes(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in attrs.items()]


def nested(depth: int) -> AnyValue:
    """An AnyValue of kvlists `depth` deep."""
    v = AnyValue(string_value="bottom")
    for _ in range(depth):
        v = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=v)]))
    return v


def span(
    op: str | None = None,
    sid: int = 1,
    parent: int | None = None,
    *,
    trace: bytes = TRACE,
    name: str = "",
    attrs: dict[str, Any] | None = None,
    start: int = NOW_NS - 250_000_000,
    end: int = NOW_NS,
    error: bool = False,
    exception: str | None = None,
    remote_parent: bool = False,
) -> Span:
    """A span with id `sid` (as 8 bytes), its parent's id, and `gen_ai.operation.name` = op."""
    all_attrs = {"gen_ai.operation.name": op} if op else {}
    all_attrs.update(attrs or {})
    s = Span(
        trace_id=trace,
        span_id=sid.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name or (op or "span"),
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attributes(all_attrs),
        flags=0x300 if remote_parent else 0x100,
    )
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    if exception:
        s.events.add(name="exception", attributes=attributes({"exception.type": exception, "exception.message": "boom"}))
    return s


def request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    res = Resource(attributes=attributes({"service.name": "svc"} if resource is None else resource))
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=res, scope_spans=[ScopeSpans(spans=list(spans))])])


def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """The OTLP/JSON encoding: proto3 JSON but with trace and span ids in hex, not base64."""
    doc = json_format.MessageToDict(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for obj in [s, *s.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64decode(obj[key]).hex()
    return json.dumps(doc).encode()
