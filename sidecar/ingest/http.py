"""HTTP ingest: POST /v1/events with one object, a JSON array, or NDJSON; plain or gzip."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import overload

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.auth import check_bearer, unauthorized
from sidecar.live import LiveConfig
from sidecar.pipeline import Pipeline
from sidecar.protocol import BLOCK_MIN_BYTES, EventDecoder, LineBlock, LineFramer
from sidecar.selfmetrics import SelfMetrics
from sidecar.types import Batch, Rejection

TRANSPORT = "http"
MAX_ERRORS = 100
_raw_list = msgspec.json.Decoder(list[msgspec.Raw]).decode
_raw_one = msgspec.json.Decoder(msgspec.Raw).decode
BOM = b"\xef\xbb\xbf"


class BodyTooLarge(Exception):
    pass


class BadEncoding(Exception):
    """A Content-Encoding we do not speak, or a compressed body that does not decompress."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class _Gunzip:
    """Incremental gzip decoding that never produces more than `limit` bytes in total.

    `max_length` bounds each step's output, so a small bomb costs at most `limit` bytes
    of memory before it is refused, however far it would inflate."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._open = False  # inside a gzip member that has not ended yet

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        while data:
            self._open = True
            try:
                chunk = self._z.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise BadEncoding(f"body is not valid gzip ({exc})") from None
            self.size += len(chunk)
            if self.size > self.limit:
                raise BodyTooLarge
            out.append(chunk)
            if self._z.eof:  # concatenated gzip members are one body (RFC 1952)
                data = self._z.unused_data
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._open = False
            else:
                data = self._z.unconsumed_tail
        return out

    def finish(self) -> None:
        if self._open:
            raise BadEncoding("gzip body is truncated")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed if it is gzip, refusing (without buffering it) anything
    over `limit` bytes: on the wire, and again after decompression."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        gunzip: _Gunzip | None = _Gunzip(limit)
    elif encoding in ("identity", ""):
        gunzip = None
    else:
        raise BadEncoding(f"unsupported Content-Encoding {encoding[:40]!r} (use gzip or none)", status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if gunzip is None:
            chunks.append(chunk)
        else:
            chunks += gunzip.feed(chunk)
    if gunzip is not None:
        gunzip.finish()
    return b"".join(chunks)


class _LineNumbers(Sequence[int]):
    """A LineBlock's line numbers, worked out only when a rejection needs one."""

    __slots__ = ("_block", "_numbers")

    def __init__(self, block: LineBlock):
        self._block = block
        self._numbers: list[int] | None = None

    def _all(self) -> list[int]:
        if self._numbers is None:
            self._numbers = self._block.numbers()
        return self._numbers

    def __len__(self) -> int:
        return len(self._all())

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index: int | slice) -> int | list[int]:
        return self._all()[index]


def split_body(body: bytes, content_type: str, max_event_bytes: int) -> tuple[Sequence[bytes], Sequence[int], list[Rejection]]:
    """Items of a body (an array's elements, NDJSON lines, or the single object), each
    with its position (element index or 0-based line number) for error reports. NDJSON of
    protocol.BLOCK_MIN_BYTES or more whose lines are all within the limit stays one LineBlock,
    for the decoder to parse whole, as the Unix listener's reads do."""
    if body[:3] == BOM:  # what some Windows tools put first; not part of the JSON
        body = body[3:]
    stripped = body.strip()
    if not stripped:
        return [], [], [Rejection(0, "invalid_json", "empty body")]
    if "ndjson" not in content_type and "jsonl" not in content_type:
        if stripped[:1] == b"[":
            try:
                items = [bytes(item) for item in _raw_list(stripped)]
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                return [], [], [Rejection(0, "invalid_json", f"body is not a valid JSON array: {exc}")]
            except RecursionError:
                return [], [], [Rejection(0, "invalid_json", "body is not a valid JSON array: nested too deeply")]
            return _within_limit(items, range(len(items)), max_event_bytes, "item")
        try:
            _raw_one(stripped)
            return _within_limit([stripped], [0], max_event_bytes, "event")  # one (possibly pretty-printed) object
        except (msgspec.DecodeError, RecursionError):
            pass  # several lines: NDJSON without the content type (each line is judged alone)
    if len(body) >= BLOCK_MIN_BYTES:
        block, _ = LineFramer(max_event_bytes).feed_block(body if body[-1:] == b"\n" else body + b"\n")
        if isinstance(block, LineBlock):  # every line proven within max_event_bytes
            return block, _LineNumbers(block), []
    lines = body.split(b"\n")
    if not lines[-1]:
        lines.pop()  # what follows the last newline
    if b"" not in lines and not any(map(bytes.isspace, lines)):  # no blank line: each is an item
        return _within_limit(lines, range(len(lines)), max_event_bytes, "line")
    numbers = [n for n, line in enumerate(lines) if line and not line.isspace()]
    return _within_limit([lines[n] for n in numbers], numbers, max_event_bytes, "line")


def _within_limit(
    items: list[bytes], positions: Iterable[int], max_event_bytes: int, what: str
) -> tuple[list[bytes], list[int], list[Rejection]]:
    """`ingest.max_event_bytes` bounds every event whatever its framing (a line, an array
    item, a whole body): the oversized ones are rejected, their neighbours kept."""
    if max(map(len, items), default=0) <= max_event_bytes:
        return items, list(positions), []
    kept, kept_at, rejected = [], [], []
    for item, at in zip(items, positions):
        if len(item) > max_event_bytes:
            rejected.append(Rejection(at, "too_large", f"{what} of {len(item)} bytes is longer than ingest.max_event_bytes ({max_event_bytes})"))
        else:
            kept.append(item)
            kept_at.append(at)
    return kept, kept_at, rejected


def events_route(
    live: LiveConfig,
    decoder: EventDecoder,
    pipeline: Pipeline,
    metrics: SelfMetrics,
    clock: Callable[[], float],
) -> Route:
    async def post_events(request: Request) -> Response:
        if not check_bearer(request, live.token()):
            return unauthorized()
        config = live.current.ingest  # one config for the whole request, whatever a reload does meanwhile
        try:
            body = await read_body(request, config.max_body_bytes)
        except BadEncoding as exc:
            metrics.count(TRANSPORT, 0, [Rejection(0, "bad_encoding", str(exc))])
            return JSONResponse(
                {"accepted": 0, "rejected": 1, "errors": [{"index": None, "error": f"bad_encoding: {exc}"}]},
                status_code=exc.status,
            )
        except BodyTooLarge:
            metrics.count(TRANSPORT, 0, [Rejection(0, "too_large", "body too large")])
            return JSONResponse(
                {"accepted": 0, "rejected": 1, "errors": [{"index": None, "error": f"too_large: body exceeds ingest.max_body_bytes ({config.max_body_bytes}) after decompression"}]},
                status_code=413,
            )
        except ClientDisconnect:
            return Response(status_code=400)
        now = clock()
        items, positions, rejected = split_body(body, request.headers.get("content-type", ""), config.max_event_bytes)
        events, raws, bad, numbered = decoder.decode_numbered(items, now)
        rejected += [r._replace(index=positions[r.index]) for r in bad]
        rejected.sort(key=lambda r: r.index)
        if events and not pipeline.try_submit(Batch(events, raws, now, TRANSPORT, numbered)):
            metrics.count(TRANSPORT, 0, rejected, dropped=len(events))
            return JSONResponse(
                {"accepted": 0, "rejected": len(rejected), "dropped": len(events), "error": "queue_full: the sidecar is overloaded, retry later"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        metrics.count(TRANSPORT, len(events), rejected)
        errors = [
            {"index": r.index, "error": f"{r.reason}: {r.message}"} for r in rejected[:MAX_ERRORS]
        ]
        status = 400 if rejected and not events else 202
        return JSONResponse({"accepted": len(events), "rejected": len(rejected), "errors": errors}, status_code=status)

    return Route("/v1/events", post_events, methods=["POST"])
