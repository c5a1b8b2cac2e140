"""GET /healthz (the process answers) and GET /readyz (every listener is up and taking events)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


def health_routes(is_ready: Callable[[], bool], listeners: Callable[[], list[str]]) -> list[Route]:
    """`listeners` names each intake as `unix:/path` or `http://host:port`, for operators reading /readyz."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ready = is_ready()
        return JSONResponse({"ready": ready, "listeners": listeners()}, status_code=200 if ready else 503)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
