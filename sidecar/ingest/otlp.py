"""OTLP/HTTP intake: POST /v1/traces turns GenAI spans into agent events; /v1/metrics and /v1/logs are accepted and counted.

A listener like the others: bodies in (binary protobuf or OTLP/JSON, plain, gzip or deflate),
a `Batch(transport="otlp")` out to the same pipeline. Spans become event dicts
(`genai.read_span`), get a price (`pricing.Pricer`), are validated by the same `EventDecoder`
as every other event, and wait in the `SpanTree` until their ancestry (agent, workflow,
invocation) is known. Decoding uses opentelemetry-proto's classes, never a hand-written parser.

Every span is counted once: received = mapped + ignored + rejected + dropped (a 503 the
exporter retries) + held (waiting for an ancestor, the gauge).
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]  # ships .pyi but no py.typed
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.auth import check_bearer
from sidecar.config import Config
from sidecar.ingest.genai import Draft, Node, Refused, read_resource, read_span
from sidecar.ingest.http import BadEncoding, BodyTooLarge, _Gunzip, read_body
from sidecar.ingest.spantree import Held, SpanTree
from sidecar.pipeline import Pipeline
from sidecar.pricing import Pricer
from sidecar.protocol import EventDecoder
from sidecar.selfmetrics import SelfMetrics
from sidecar.types import Batch, Event, Rejection

TRANSPORT = "otlp"
PROTOBUF, JSON = "application/x-protobuf", "application/json"
MAX_ERRORS = 10  # span problems quoted in partial_success.error_message (all are counted)
# Bodies up to this size (decompressed) are decoded and mapped on the event loop: a batch
# processor's 512 spans with their message content are ~400 KB, ~15-20 ms of Python. Larger ones
# go to a worker thread, so that no body holds the loop for longer. Smaller ones stay on the loop
# because with a worker the two threads hand the GIL back and forth, and a span cost ~13% more
# CPU (BENCHMARKS.md, issue 15).
INLINE_BODY_BYTES = 512 * 1024
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_decode_json = msgspec.json.decode
_encode = msgspec.json.encode

# google.rpc.Code values, for the Status body of 4xx/5xx answers.
_INVALID_ARGUMENT, _UNAUTHENTICATED, _RESOURCE_EXHAUSTED, _UNAVAILABLE = 3, 16, 8, 14

# A mapped span on its way: its draft, the event the decoder made of it, and the JSON it was decoded from.
Pending = tuple[Draft, Event, bytes]


class BadBody(Exception):
    """A body that is not an ExportTraceServiceRequest; `reason` labels the request counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Prepared:
    """One request's spans, decoded and mapped, before the span tree and the pipeline see them."""

    received: int = 0
    problems: list[str] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    nodes: list[tuple[bytes, Node]] = field(default_factory=list)
    valid: list[tuple[bytes, Node, Pending]] = field(default_factory=list)
    bad: list[Rejection] = field(default_factory=list)


@dataclass
class Answer:
    status: int
    message: Message
    headers: dict[str, str] | None = None


class _Inflate(_Gunzip):
    """http.py's bounded gzip decoding, for `Content-Encoding: deflate` (zlib format, RFC 1950)."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self._z = zlib.decompressobj(zlib.MAX_WBITS)


async def read_otlp_body(request: Request, limit: int) -> bytes:
    """`read_body` (identity and gzip, `limit` on the wire and after decompression), plus deflate."""
    if request.headers.get("content-encoding", "").strip().lower() != "deflate":
        return await read_body(request, limit)
    scope = {**request.scope, "headers": [(k, v) for k, v in request.scope["headers"] if k != b"content-encoding"]}
    raw = await read_body(Request(scope, request.receive), limit)
    inflate = _Inflate(limit)
    try:
        body = b"".join(inflate.feed(raw))
        inflate.finish()
    except BadEncoding:
        raise BadEncoding("body is not valid deflate (zlib) data") from None
    if inflate._z.unused_data:
        raise BadEncoding("body has bytes after the end of its deflate stream")
    return body


def _ids_to_bytes(doc: dict[str, Any]) -> dict[tuple[int, int, int], Refused]:
    """OTLP/JSON writes trace and span ids in hex where proto3 JSON expects base64: convert them
    in place, and return the spans (by position) whose ids are not hex."""
    import base64

    bad: dict[tuple[int, int, int], Refused] = {}

    def convert(obj: dict[str, Any], where: tuple[int, int, int] | None) -> None:
        for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
            value = obj.get(key)
            if not isinstance(value, str):
                continue
            if _HEX.fullmatch(value):
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
                continue
            obj[key] = ""
            if where is not None and where not in bad:
                name = re.sub(r"(?<!_)([A-Z])", r"_\1", key).lower()
                bad[where] = Refused(f"bad_{name}", f"{key} must be hex, not {value[:40]!r}")

    def items(obj: Any, *keys: str) -> list[Any]:
        if not isinstance(obj, dict):
            return []
        for key in keys:
            if isinstance(obj.get(key), list):
                return list(obj[key])
        return []

    for i, rs in enumerate(items(doc, "resourceSpans", "resource_spans")):
        for j, ss in enumerate(items(rs, "scopeSpans", "scope_spans")):
            for k, span in enumerate(items(ss, "spans")):
                if isinstance(span, dict):
                    convert(span, (i, j, k))
                    for link in items(span, "links"):
                        if isinstance(link, dict):
                            convert(link, None)
    return bad


def decode_request(body: bytes, content_type: str) -> tuple[ExportTraceServiceRequest, dict[tuple[int, int, int], Refused]]:
    """The request in a body, with the spans whose JSON ids were not hex. Raises BadBody."""
    request = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadBody("undecodable", f"body is not a protobuf ExportTraceServiceRequest ({exc})") from None
        return request, {}
    try:
        doc = _decode_json(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadBody("undecodable", f"body is not valid JSON ({detail})") from None
    if not isinstance(doc, dict):
        raise BadBody("undecodable", "body must be a JSON object (an ExportTraceServiceRequest)")
    if doc and "resourceSpans" not in doc and "resource_spans" not in doc:
        found = ", ".join(sorted(doc)[:5])
        raise BadBody("wrong_message_type", f"body is not an ExportTraceServiceRequest: no resourceSpans (found {found[:200]})")
    bad = _ids_to_bytes(doc)
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise BadBody("undecodable", f"body is not an OTLP/JSON ExportTraceServiceRequest ({str(exc)[:300]})") from None
    return request, bad


def _content_type(request: Request) -> str | None:
    ct = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ct in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if ct == JSON:
        return JSON
    return None


def _encode_message(message: Message, content_type: str) -> bytes:
    if content_type == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


class OtlpReceiver:
    """Owns the span tree, the price table and the otlp counters; serves the three OTLP paths."""

    def __init__(
        self,
        config: Config,
        decoder: EventDecoder,
        pipeline: Pipeline,
        metrics: SelfMetrics,
        registry: CollectorRegistry,
        clock: Callable[[], float],
        pricer: Pricer,
    ):
        self.config = config
        self.otlp = config.otlp
        self.decoder = decoder
        self.pipeline = pipeline
        self.metrics = metrics
        self.clock = clock
        self.pricer = pricer  # shared with the decoder, which prices the other transports' events
        self.tree: SpanTree[Pending] = SpanTree(self.otlp.max_tracked_spans, self.otlp.max_held, self.otlp.hold)
        self._timer: asyncio.TimerHandle | None = None
        self.requests = Counter(
            "sidecar_otlp_requests",
            "OTLP/HTTP requests by signal (traces, metrics, logs) and outcome: accepted, partial (some spans refused), "
            "refused (every span refused), ignored (metrics and logs), undecodable, wrong_message_type, too_large, "
            "bad_encoding, unsupported_content_type, unauthorized, queue_full.",
            ["signal", "outcome"],
            registry=registry,
        )
        self.spans_received = Counter("sidecar_otlp_spans_received", "Spans received on /v1/traces.", registry=registry)
        self.spans = Counter(
            "sidecar_otlp_spans",
            "Spans by outcome: mapped (to an event; reason: its kind), ignored (not a mapped GenAI operation), rejected "
            "(reason as in partial_success), dropped (queue_full: the exporter retries). received = mapped + ignored + "
            "rejected + dropped + held.",
            ["outcome", "reason"],
            registry=registry,
        )
        self.held = Gauge("sidecar_otlp_spans_held", "Spans waiting for an ancestor to arrive (see otlp.hold).", registry=registry)
        self.held.set_function(lambda: len(self.tree.held))
        self.released = Counter(
            "sidecar_otlp_held_released",
            "Held spans that left the hold: resolved (the ancestor came), timeout (otlp.hold passed), overflow (otlp.max_held).",
            ["reason"],
            registry=registry,
        )
        for signal in ("traces", "metrics", "logs"):
            self.requests.labels(signal, "accepted" if signal == "traces" else "ignored")
        for reason in ("resolved", "timeout", "overflow"):
            self.released.labels(reason)

    # -- routes -----------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/v1/traces", self._post_traces, methods=["POST"]),
            Route("/v1/metrics", self._ignored("metrics", ExportMetricsServiceResponse), methods=["POST"]),
            Route("/v1/logs", self._ignored("logs", ExportLogsServiceResponse), methods=["POST"]),
        ]

    def _respond(self, signal: str, outcome: str, content_type: str | None, answer: Answer) -> Response:
        self.requests.labels(signal, outcome).inc()
        media = content_type or JSON
        return Response(_encode_message(answer.message, media), answer.status, headers=answer.headers, media_type=media)

    async def _read(self, request: Request, signal: str) -> tuple[bytes | None, str | None, Response | None]:
        """The body, or the refusal for auth, content type, encoding or size."""
        content_type = _content_type(request)
        if not check_bearer(request, self.config.auth.token):
            return None, content_type, self._respond(
                signal, "unauthorized", content_type,
                Answer(401, Status(code=_UNAUTHENTICATED, message="missing or wrong bearer token"), {"WWW-Authenticate": "Bearer"}),
            )
        if content_type is None:
            given = request.headers.get("content-type", "")[:60]
            status = Status(code=_INVALID_ARGUMENT, message=f"Content-Type must be {PROTOBUF} or {JSON}, not {given!r}")
            return None, None, self._respond(signal, "unsupported_content_type", None, Answer(415, status))
        limit = self.config.ingest.max_body_bytes
        try:
            return await read_otlp_body(request, limit), content_type, None
        except BadEncoding as exc:
            return None, content_type, self._respond(
                signal, "bad_encoding", content_type, Answer(exc.status, Status(code=_INVALID_ARGUMENT, message=f"bad_encoding: {exc}"))
            )
        except BodyTooLarge:
            status = Status(code=_RESOURCE_EXHAUSTED, message=f"too_large: body exceeds ingest.max_body_bytes ({limit}) after decompression")
            return None, content_type, self._respond(signal, "too_large", content_type, Answer(413, status))
        except ClientDisconnect:
            return None, content_type, Response(status_code=400)

    def _ignored(self, signal: str, response: type[Message]) -> Callable[[Request], Any]:
        async def post(request: Request) -> Response:
            _, content_type, refusal = await self._read(request, signal)
            if refusal is not None:
                return refusal
            return self._respond(signal, "ignored", content_type, Answer(200, response()))

        return post

    async def _post_traces(self, request: Request) -> Response:
        body, content_type, refusal = await self._read(request, "traces")
        if refusal is not None:
            return refusal
        assert body is not None and content_type is not None
        now = self.clock()
        # Decoding and mapping touch no shared state: for a large body (10 MiB is ~17,000 spans,
        # ~1.5 s of Python) a worker thread does them, so the event loop is not stalled meanwhile.
        if len(body) <= INLINE_BODY_BYTES:
            prepared = self.prepare(body, content_type, now)
        else:
            prepared = await asyncio.to_thread(self.prepare, body, content_type, now)
        outcome, answer = prepared if isinstance(prepared, tuple) else self.commit(prepared, now)
        self._schedule()
        return self._respond("traces", outcome, content_type, answer)

    # -- the work -----------------------------------------------------------------------------------

    def handle(self, body: bytes, content_type: str, now: float) -> tuple[str, Answer]:
        """Decode, map, resolve and submit one body's spans; the outcome label and the answer."""
        prepared = self.prepare(body, content_type, now)
        return prepared if isinstance(prepared, tuple) else self.commit(prepared, now)

    def prepare(self, body: bytes, content_type: str, now: float) -> Prepared | tuple[str, Answer]:
        """Decode a body and map its spans (any thread: no shared state but counters and caches)."""
        try:
            request, bad_ids = decode_request(body, content_type)
        except BadBody as exc:
            return exc.reason, Answer(400, Status(code=_INVALID_ARGUMENT, message=f"{exc.reason}: {exc}"))
        return self.map_request(request, bad_ids, now)

    def map_request(self, request: ExportTraceServiceRequest, bad_ids: dict[tuple[int, int, int], Refused], now: float) -> Prepared:
        """Spans -> event drafts, priced and validated by the EventDecoder; nothing resolved or queued yet."""
        otlp = self.otlp
        out = Prepared()
        nodes = out.nodes
        placed: list[tuple[bytes, Node, Draft]] = []
        for i, rs in enumerate(request.resource_spans):
            resource = read_resource(rs.resource.attributes, otlp)
            for j, ss in enumerate(rs.scope_spans):
                spans = ss.spans
                out.received += len(spans)
                for k, span in enumerate(spans):
                    try:
                        if bad_ids and (i, j, k) in bad_ids:
                            raise bad_ids[i, j, k]
                        key, node, draft = read_span(span, resource, otlp)
                    except Refused as exc:
                        out.rejected[exc.reason] = out.rejected.get(exc.reason, 0) + 1
                        out.problems.append(f"{exc.reason}: {exc} (span {span.name[:60]!r}, resourceSpans[{i}].scopeSpans[{j}].spans[{k}])")
                        continue
                    nodes.append((key, node))
                    if isinstance(draft, str):
                        out.ignored[draft] = out.ignored.get(draft, 0) + 1
                    else:
                        placed.append((key, node, draft))
        self.pricer.fill_dicts([(draft.event, draft.provider) for _, _, draft in placed])
        events, raws, out.bad = self.decoder.decode([_encode(draft.event) for _, _, draft in placed], now, price=False)
        if not out.bad:
            out.valid = [(key, node, (draft, event, raw)) for (key, node, draft), event, raw in zip(placed, events, raws)]
            return out
        refused_at = {r.index: r for r in out.bad}
        for index, r in refused_at.items():
            out.rejected[r.reason] = out.rejected.get(r.reason, 0) + 1
            out.problems.append(f"{r.reason}: {r.message} (span {placed[index][2].event['span_id']})")
        valid = [p for index, p in enumerate(placed) if index not in refused_at]
        out.valid = [(key, node, (draft, event, raw)) for (key, node, draft), event, raw in zip(valid, events, raws)]
        return out

    def handle_request(
        self, request: ExportTraceServiceRequest, bad_ids: dict[tuple[int, int, int], Refused], now: float
    ) -> tuple[str, Answer]:
        return self.commit(self.map_request(request, bad_ids, now), now)

    def commit(self, prepared: Prepared, now: float) -> tuple[str, Answer]:
        """Resolve ancestry, queue one batch, count, answer. On the event loop, with no await:
        the span tree and the pipeline's queue are touched by nothing else meanwhile."""
        tree = self.tree
        p = prepared
        self.spans_received.inc(p.received)
        tree.remember_all(p.nodes)
        ready: list[Held[Pending]] = []
        new_held: list[bytes] = []
        for key, node, item in p.valid:
            done = tree.place(key, node, item, now)
            if done is None:
                new_held.append(key)
            else:
                ready.append(done)
        woken = tree.wake(key for key, _ in p.nodes)
        timed_out, overflow = tree.expire(now)
        released = woken + timed_out + overflow
        if not self._submit(ready + released, now, p.bad):
            tree.discard(new_held)  # the exporter sends this request again
            tree.restore(released)  # these came in earlier requests, already answered: keep them
            self.metrics.count(TRANSPORT, 0, p.bad, dropped=len(ready) + len(new_held))
            self._count_spans(p.ignored, p.rejected)
            self.spans.labels("dropped", "queue_full").inc(len(ready) + len(new_held))
            status = Status(code=_UNAVAILABLE, message="queue_full: the sidecar is overloaded, retry later")
            return "queue_full", Answer(503, status, {"Retry-After": "1"})
        self._count_spans(p.ignored, p.rejected)
        self._count_released(woken, timed_out, overflow)
        n_rejected = sum(p.rejected.values())
        if not n_rejected:
            return "accepted", Answer(200, ExportTraceServiceResponse())
        problems = p.problems
        message = "; ".join(problems[:MAX_ERRORS]) + (f"; and {len(problems) - MAX_ERRORS} more" if len(problems) > MAX_ERRORS else "")
        if n_rejected == p.received:
            return "refused", Answer(400, Status(code=_INVALID_ARGUMENT, message=f"every span was refused: {message}"))
        partial = ExportTracePartialSuccess(rejected_spans=n_rejected, error_message=message)
        return "partial", Answer(200, ExportTraceServiceResponse(partial_success=partial))

    def _submit(self, items: list[Held[Pending]], now: float, rejections: list[Rejection]) -> bool:
        """Finish the items' events and queue them as one batch, counting them with `rejections` (the
        decoder's, for this request); False when the queue is full (nothing counted: the caller decides)."""
        events: list[Event] = []
        raws: list[bytes] = []
        mapped: dict[str, int] = {}
        for held in items:
            draft, event, raw = held.item
            context = held.context
            fields = draft.event  # what `raw` holds: never changed after encoding (a retried batch adds the same again)
            kind = draft.kind
            mapped[kind] = mapped.get(kind, 0) + 1
            # What the ancestors give is appended to the JSON the decoder validated, not re-encoded with it.
            extra = b""
            if kind != "workflow" and "agent" not in fields:
                agent = context.agent or draft.fallback_agent
                if agent:
                    event.agent = agent
                    extra += b',"agent":' + _encode(agent)
            if "workflow" not in fields:
                workflow = context.workflow or draft.fallback_workflow
                if workflow:
                    event.workflow = workflow
                    extra += b',"workflow":' + _encode(workflow)
            if "invocation_id" not in fields and context.invocation_id:
                event.invocation_id = context.invocation_id
                extra += b',"invocation_id":' + _encode(context.invocation_id)
            events.append(event)
            raws.append(raw[:-1] + extra + b"}" if extra else raw)
        if events and not self.pipeline.try_submit(Batch(events, raws, now, TRANSPORT)):
            return False
        self.metrics.count(TRANSPORT, len(events), rejections)
        for kind, n in mapped.items():
            self.spans.labels("mapped", kind).inc(n)
        return True

    def _count_spans(self, ignored: dict[str, int], rejected: dict[str, int]) -> None:
        for reason, n in ignored.items():
            self.spans.labels("ignored", reason).inc(n)
        for reason, n in rejected.items():
            self.spans.labels("rejected", reason).inc(n)

    def _count_released(self, woken: list[Any], timed_out: list[Any], overflow: list[Any]) -> None:
        for reason, items in (("resolved", woken), ("timeout", timed_out), ("overflow", overflow)):
            if items:
                self.released.labels(reason).inc(len(items))

    # -- held spans go out when their hold passes, even if no request comes --------------------------

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        deadline = self.tree.next_deadline()
        if deadline is not None:
            delay = max(deadline - self.clock(), 0.0) + 0.05
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush(self.clock())
        self._schedule()

    def flush(self, now: float) -> int:
        """Send every held span whose hold has passed (or beyond max_held); how many went."""
        timed_out, overflow = self.tree.expire(now)
        if not self._submit(timed_out + overflow, now, []):
            self.tree.restore(timed_out + overflow)  # the timer tries again
            return 0
        self._count_released([], timed_out, overflow)
        return len(timed_out) + len(overflow)

    def close(self) -> None:
        """Stop the timer (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
