"""GET /v1/stats: the window sink's exact statistics as JSON (see README, "Rolling windows")."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.auth import check_bearer, unauthorized
from sidecar.sinks.window import DIMENSIONS, WindowSink

PARAMETERS = ("window", "by", "limit", *DIMENSIONS)
DEFAULT_LIMIT = 50


class BadQuery(ValueError):
    """A query parameter the API does not accept; the message names it."""


def parse_query(params: dict[str, str], sink: WindowSink) -> tuple[str | None, dict[str, str], str | None, int]:
    """(window, filters, by, limit) from query parameters, or BadQuery naming what is wrong."""
    for name in params:
        if name not in PARAMETERS:
            raise BadQuery(f"unknown parameter {name!r} (expected one of: {', '.join(PARAMETERS)})")
    window = params.get("window")
    if window is not None and sink.find_window(window) is None:
        raise BadQuery(f"unknown window {window!r} (configured: {', '.join(sink.window_names())})")
    by = params.get("by")
    if by is not None and by not in DIMENSIONS:
        raise BadQuery(f"unknown by {by!r} (expected one of: {', '.join(DIMENSIONS)})")
    limit_text = params.get("limit", str(DEFAULT_LIMIT))
    if not limit_text.isdigit() or int(limit_text) < 1:
        raise BadQuery(f"limit must be a positive integer, not {limit_text!r}")
    filters = {d: params[d] for d in DIMENSIONS if d in params}
    return window, filters, by, int(limit_text)


def stats_route(sink: WindowSink, token: Callable[[], str | None]) -> Route:
    async def get_stats(request: Request) -> Response:
        if not check_bearer(request, token()):
            return unauthorized()
        try:
            window, filters, by, limit = parse_query(dict(request.query_params), sink)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        # Handlers run on the event loop between batches; the lock only guards against a scrape.
        return JSONResponse(sink.stats(window, filters, by, limit))

    return Route("/v1/stats", get_stats, methods=["GET"])
