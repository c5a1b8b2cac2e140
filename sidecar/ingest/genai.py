"""GenAI spans -> agent event dicts, following the OpenTelemetry GenAI semantic conventions. No I/O.

`read_span` turns one decoded OTLP span into what the span tree needs to know about it (`Node`:
its parent, and the agent or workflow it stands for) and, for the GenAI operations the sidecar
maps, a `Draft`: the event dict without the fields that come from ancestors (`agent`,
`workflow`, `invocation_id`), which `sidecar/ingest/spantree.py` resolves later.

    gen_ai.operation.name                           event
    chat, text_completion, generate_content,
    embeddings                                      llm.call
    execute_tool                                    tool.call
    invoke_agent                                    agent.completed / agent.failed
    invoke_workflow                                 workflow.completed / workflow.failed
    anything else                                   none (ignored, counted)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sidecar.config import OtlpConfig

INFERENCE = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
EVENT_TYPES = {"execute_tool": "tool.call", "invoke_agent": "agent", "invoke_workflow": "workflow", **{op: "llm.call" for op in INFERENCE}}

# Message content: prompts, completions, instructions, tool arguments and results, in their current
# names, the deprecated ones, and the copies frameworks keep under their own names. Out of the
# payload unless otlp.keep_content.
CONTENT_KEYS = frozenset({
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "gen_ai.prompt", "gen_ai.completion",
    "pydantic_ai.all_messages", "all_messages_events", "final_result", "tool_arguments", "tool_response",
    "input.value", "output.value", "llm.prompts", "traceloop.entity.input", "traceloop.entity.output",
})
CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.")

# A cost some instrumentations put on the span (Pydantic AI/Logfire, Langfuse, OpenInference).
COST_KEYS = ("operation.cost", "gen_ai.usage.cost", "llm.cost.total")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")  # current, then deprecated
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
SESSION = ("gen_ai.conversation.id", "session.id")
MODEL = ("gen_ai.response.model", "gen_ai.request.model")  # the response's wins
_OPERATION, _AGENT, _WORKFLOW, _TOOL = "gen_ai.operation.name", "gen_ai.agent.name", "gen_ai.workflow.name", "gen_ai.tool.name"
_NUMBERS = (("input_tokens", INPUT_TOKENS), ("output_tokens", OUTPUT_TOKENS), ("cost_usd", COST_KEYS))
# Where an attribute goes, by key: a field candidate (whether it becomes a field depends on the
# operation, known only once every attribute is read), the payload, or nowhere (content).
_FIELD, _PAYLOAD, _CONTENT = "field", "payload", "content"
_FIELD_KEYS = (_OPERATION, _AGENT, _WORKFLOW, _TOOL, "error.type", *SESSION, *MODEL, *INPUT_TOKENS, *OUTPUT_TOKENS, *COST_KEYS)
# The route of each key seen, per keep_content: one dict lookup per attribute instead of a set and
# a prefix test. Bounded (keys are the sender's to choose): beyond it, unknown keys are tested each time.
_MAX_ROUTES = 4096
_ROUTES: dict[bool, dict[str, str]] = {
    False: {**dict.fromkeys(CONTENT_KEYS, _CONTENT), **dict.fromkeys(_FIELD_KEYS, _FIELD)},
    True: dict.fromkeys(_FIELD_KEYS, _FIELD),
}


def _route(key: str, keep_content: bool) -> str:
    """Where an attribute not yet in `_ROUTES` goes (and remember it while there is room)."""
    where = _PAYLOAD if keep_content or not key.startswith(CONTENT_PREFIXES) else _CONTENT
    routes = _ROUTES[keep_content]
    if len(routes) < _MAX_ROUTES:
        routes[key] = where
    return where

TRACE_ID_BYTES, SPAN_ID_BYTES = 16, 8
MAX_VALUE_DEPTH = 8  # AnyValue arrays/kvlists nested deeper than this show as a marker in the payload
TOO_DEEP = "<nested too deeply>"
_IS_REMOTE = 0x100 | 0x200  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_ERROR = Status.STATUS_CODE_ERROR
_encode = msgspec.json.encode


# Node and Draft are msgspec Structs with gc=False (they hold no references that could form a cycle):
# up to otlp.max_tracked_spans Nodes live on, and the collector need not walk them on every pass.
class Node(msgspec.Struct, gc=False):
    """What a span tells its descendants: its parent and the agent or workflow it stands for."""

    parent: bytes | None  # trace id + parent span id; None for a root or a remote parent
    is_agent: bool  # an invoke_agent span: its id is its descendants' invocation_id
    agent: str | None  # gen_ai.agent.name of an invoke_agent span
    workflow: str | None  # gen_ai.workflow.name of any span


class Draft(msgspec.Struct, gc=False):
    """An event dict still missing what ancestors give, with what it falls back to."""

    event: dict[str, Any]
    kind: str  # llm.call, tool.call, agent or workflow
    failed: bool
    provider: str | None
    fallback_agent: str | None
    fallback_workflow: str | None


class Refused(Exception):
    """A span that cannot be mapped; `reason` is the label of the rejected-span counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def any_value(value: AnyValue, depth: int = 0) -> Any:
    """An AnyValue as plain JSON-able Python; bytes as hex; nesting bounded."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        d = value.double_value
        return d if math.isfinite(d) else str(d)  # JSON has no inf/NaN
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind is None:
        return None
    if depth >= MAX_VALUE_DEPTH:
        return TOO_DEEP
    if kind == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return None  # a kind newer than this code (string_value_strindex needs the request's string table)


def _str(attrs: dict[str, Any], keys: tuple[str, ...] | str) -> str | None:
    for key in (keys,) if isinstance(keys, str) else keys:
        v = attrs.get(key)
        if v.__class__ is str and v:
            return v
    return None


@dataclass(slots=True)
class ResourceInfo:
    """What a span's resource gives every span under it (read once per resource)."""

    service: str | None
    agent: str | None  # the value of otlp.agent_attribute
    workflow: str | None  # the value of otlp.workflow_attribute


def read_resource(attributes: Any, config: OtlpConfig) -> ResourceInfo:
    attrs = {kv.key: any_value(kv.value) for kv in attributes}
    return ResourceInfo(
        _str(attrs, "service.name"),
        _str(attrs, config.agent_attribute) if config.agent_attribute else None,
        _str(attrs, config.workflow_attribute) if config.workflow_attribute else None,
    )


def check_ids(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> None:
    if len(trace_id) != TRACE_ID_BYTES:
        raise Refused("bad_trace_id", f"trace_id must be {TRACE_ID_BYTES} bytes (32 hex digits), got {len(trace_id)}")
    if len(span_id) != SPAN_ID_BYTES:
        raise Refused("bad_span_id", f"span_id must be {SPAN_ID_BYTES} bytes (16 hex digits), got {len(span_id)}")
    if parent_span_id and len(parent_span_id) != SPAN_ID_BYTES:
        raise Refused("bad_parent_span_id", f"parent_span_id must be empty or {SPAN_ID_BYTES} bytes, got {len(parent_span_id)}")


def _first_str(known: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """Remove `keys` from `known`; the first non-empty string among them."""
    found = None
    for key in keys:
        v = known.pop(key, None)
        if found is None and v.__class__ is str and v:
            found = v
    return found


def _exception_type(span: Span) -> str:
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type" and kv.value.string_value:
                    return kv.value.string_value
    return "error"


def _bounded_payload(attrs: dict[str, Any], budget: int) -> msgspec.Raw:
    """The payload of a span whose attributes (content already out) encode to more than `budget` bytes:
    attributes kept in order while they fit, and how many were left out."""
    kept: dict[str, Any] = {}
    left_out = 0
    for key, value in attrs.items():
        budget -= len(key) + len(_encode(value)) + 4
        if budget < 0:
            left_out += 1
        else:
            kept[key] = value
    kept["otel.attributes_left_out"] = left_out
    return msgspec.Raw(_encode(kept))


def read_span(span: Span, resource: ResourceInfo, config: OtlpConfig) -> tuple[bytes, Node, Draft | str]:
    """The span's key, its `Node`, and a `Draft`, or the reason it is ignored (not a mapped operation).

    Raises `Refused` for a span that breaks the protocol (ids, attribute count, times)."""
    trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id  # each read makes a new bytes
    if len(trace_id) != TRACE_ID_BYTES or len(span_id) != SPAN_ID_BYTES or (parent_id and len(parent_id) != SPAN_ID_BYTES):
        check_ids(trace_id, span_id, parent_id)  # raises, naming the id
    attributes = span.attributes
    if len(attributes) > config.max_attributes:
        raise Refused("too_many_attributes", f"{len(attributes)} attributes, more than otlp.max_attributes ({config.max_attributes})")
    remote_parent = span.flags & _IS_REMOTE == _IS_REMOTE
    parent = trace_id + parent_id if parent_id and not remote_parent else None
    # One pass: attributes that can become fields go to `known`, the rest (content left out, never
    # even made a Python string) to `attrs`, the payload. Reaching an attribute through upb costs
    # more than everything done with it here, so each is read exactly once.
    keep_content = config.keep_content
    routes = _ROUTES[keep_content]
    attrs: dict[str, Any] = {}
    known: dict[str, Any] = {}
    for kv in attributes[:]:  # a list: iterating the container itself ends in an IndexError, built and caught per span
        k = kv.key
        where = routes.get(k) or _route(k, keep_content)
        if where is _CONTENT:
            continue
        v = kv.value
        value: Any = v.string_value  # nearly every attribute is a non-empty string, most others ints
        if not value:
            value = v.int_value if v.WhichOneof("value") == "int_value" else any_value(v)
        if where is _PAYLOAD:
            attrs[k] = value
        else:
            known[k] = value
    # The fields every span may give (a non-empty string, else nothing; the attribute is used up either way).
    op = known.pop(_OPERATION, None) if known else None
    if op.__class__ is not str or not op:
        op = None
    own_agent = known.pop(_AGENT, None) if known else None
    if own_agent.__class__ is not str or not own_agent:
        own_agent = None
    workflow = known.pop(_WORKFLOW, None) if known else None
    if workflow.__class__ is not str or not workflow:
        workflow = None
    is_agent = op == "invoke_agent"
    node = Node(parent, is_agent, own_agent if is_agent else None, workflow)
    key = trace_id + span_id
    kind = EVENT_TYPES.get(op) if op else None
    if kind is None:
        return key, node, "no_operation" if op is None else "other_operation"

    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start and end and end < start:
        raise Refused("bad_time", "end_time_unix_nano is before start_time_unix_nano")
    error_type = known.pop("error.type", None)
    failed = error_type is not None or span.status.code == _ERROR
    trace_hex = trace_id.hex()
    span_hex = span_id.hex()
    event: dict[str, Any] = {"type": kind, "trace_id": trace_hex, "span_id": span_hex, "run_id": trace_hex}
    if end:
        event["timestamp"] = end / 1e9
        if start:
            event["duration_ms"] = (end - start) / 1e6
    if own_agent and kind != "workflow":
        event["agent"] = own_agent
    if workflow:
        event["workflow"] = workflow
    if is_agent:
        event["invocation_id"] = span_hex
    if known:
        session = _first_str(known, SESSION)
        if session:
            event["session_id"] = session
        if kind == "llm.call":
            model = _first_str(known, MODEL)
            if model:
                event["model"] = model
            # Tokens only from inference spans: an agent span's (aggregated) usage repeats its children's.
            for field, keys in _NUMBERS:
                found = None
                for k in keys:  # the first present; every one is used up
                    v = known.pop(k, None)
                    if found is None and v is not None:
                        found = v
                if found is not None:  # an integral double is a count; a string or worse goes to the decoder, which names it
                    event[field] = int(found) if found.__class__ is float and found.is_integer() else found
        elif kind == "tool.call":
            tool = known.pop(_TOOL, None)
            if tool.__class__ is str and tool:
                event["tool"] = tool
        if known:  # what this kind of span does not map (a model on a tool span, usage on an agent's) rides along
            attrs.update(known)
    if failed:
        event["success"] = False
        event["severity"] = "error"
        event["error"] = error_type if error_type.__class__ is str and error_type else _exception_type(span)
    if kind in ("agent", "workflow"):
        event["type"] = f"{kind}.failed" if failed else f"{kind}.completed"
    name = span.name
    if name:
        attrs["span.name"] = name
    if resource.service:
        attrs["service.name"] = resource.service
    raw = _encode(attrs)
    event["payload"] = msgspec.Raw(raw) if len(raw) <= config.max_payload_bytes else _bounded_payload(attrs, config.max_payload_bytes)
    provider = attrs.get("gen_ai.provider.name")
    if provider.__class__ is not str or not provider:
        provider = _str(attrs, PROVIDER)
    return key, node, Draft(event, kind, failed, provider, resource.agent, resource.workflow)
