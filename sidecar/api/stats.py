"""GET /v1/stats: the window sink's exact statistics as JSON (see README, "Rolling windows").

A query that reads rows (filters without windows.index_by, or `by=` groups) costs time in
proportion to the window's events and keys: its snapshot is taken on the event loop (a copy
of the rows it needs, a few ms per million events), then the document is computed and
rendered in a worker thread, at most STATS_WORKERS at a time, so /healthz, ingest and
shutdown never wait behind it. Light queries (counters and sorted samples only, few keys)
answer inline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.auth import check_bearer, unauthorized
from sidecar.sinks.series import MAX_LABEL_LENGTH
from sidecar.sinks.window import DIMENSIONS, WindowSink
from sidecar.sinks.window.query import DEFAULT_LIMIT, MAX_LIMIT, Query, detach, stats_document

PARAMETERS = ("window", "by", "limit", *DIMENSIONS)
INLINE_KEYS = 2000  # up to this many interned keys, a query without rows is answered on the loop
STATS_WORKERS = 1  # heavy /v1/stats computations at once; more wait their turn (holding no snapshot)


class BadQuery(ValueError):
    """A query parameter the API does not accept; the message names it, `reason` labels the counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def parse_query(items: list[tuple[str, str]], sink: WindowSink) -> Query:
    """The Query of a request's parameters (name, value) in order, or BadQuery naming what is wrong."""
    params: dict[str, str] = {}
    for name, value in items:
        if name not in PARAMETERS:
            raise BadQuery("unknown_parameter", f"unknown parameter {name!r} (expected one of: {', '.join(PARAMETERS)})")
        if name in params:
            raise BadQuery("repeated_parameter", f"parameter {name!r} given more than once (give each parameter at most once)")
        params[name] = value
    window = params.get("window")
    if window is not None and sink.find_window(window) is None:
        raise BadQuery("unknown_window", f"unknown window {window!r} (configured: {', '.join(sink.window_names())})")
    by = params.get("by")
    if by is not None and by not in DIMENSIONS:
        raise BadQuery("unknown_by", f"unknown by {by!r} (expected one of: {', '.join(DIMENSIONS)})")
    limit_text = params.get("limit", str(DEFAULT_LIMIT))
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
    digits = limit_text.lstrip("0")
    if not (limit_text.isascii() and limit_text.isdigit()) or not digits:
        raise BadQuery("bad_limit", f"limit must be a positive integer, not {limit_text[:20]!r}")
    if len(digits) > len(str(MAX_LIMIT)) or int(digits) > MAX_LIMIT:  # (int() refuses 4,301+ digits)
        raise BadQuery("bad_limit", f"limit must be at most {MAX_LIMIT}, not {limit_text[:20]}")
    # Values are stored cut to the label length, so a filter on the full value still matches.
    filters = {d: params[d][:MAX_LABEL_LENGTH] for d in DIMENSIONS if d in params}
    return Query(window, filters, by, int(digits))


def _group_json(group: dict[str, Any]) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(group))


def stats_route(sink: WindowSink, token: Callable[[], str | None]) -> Route:
    workers = asyncio.Semaphore(STATS_WORKERS)

    async def get_stats(request: Request) -> Response:
        if not check_bearer(request, token()):
            return unauthorized()
        try:
            query = parse_query(request.query_params.multi_items(), sink)
        except BadQuery as exc:
            sink.queries_refused.labels(exc.reason).inc()
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not query.reads_rows(sink.index_by) and query.by is None and sink.keys() <= INLINE_KEYS:
            # O(keys) work on counters and sorted samples: with few keys, cheaper inline than a thread hop.
            return JSONResponse(stats_document(sink.snapshot(query), query))
        async with workers:  # the snapshot is taken only once it can be worked on
            snap = detach(sink.snapshot(query), query)
            # Groups are encoded as they are built: one encoder call over a multi-megabyte answer
            # would hold the GIL (and so the event loop) for its whole duration.
            body = await anyio.to_thread.run_sync(lambda: msgspec.json.encode(stats_document(snap, query, _group_json)))
        return Response(body, media_type="application/json")

    return Route("/v1/stats", get_stats, methods=["GET"])
