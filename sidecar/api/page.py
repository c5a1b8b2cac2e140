"""The built-in live page: `GET /` and its static files under `/web/`.

The page is plain HTML, CSS and JavaScript shipped in `sidecar/web/` (no build
step, nothing fetched from a CDN). It talks only to the sidecar's own public
routes, `WS /v1/tail` and `GET /v1/stats`, so it needs nothing on the server
beyond serving its files. The page itself holds no data, so it is served without
a token; the routes it calls check `auth.token` and the page asks for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from sidecar.config import WebConfig

WEB_DIR = Path(__file__).parent.parent / "web"

# Everything comes from the sidecar itself; the tail is a same-origin WebSocket.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate (ETag) on every load so an upgraded sidecar never runs an old script.
    "Cache-Control": "no-cache",
}


class _StaticFiles(StaticFiles):
    """Starlette's StaticFiles (which refuses paths outside its directory), plus our headers;
    the page template, under any spelling of its path (`/web/index.html`, `/web//index.html`,
    `/web/./index.html`), is answered with the filled page, never the raw `{{max_rows}}`."""

    def __init__(self, page: Callable[[Headers], Response], directory: Path):
        super().__init__(directory=directory)
        self._page = page

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        if Path(full_path).resolve() == TEMPLATE.resolve():
            return self._page(Headers(scope=scope))
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


TEMPLATE = WEB_DIR / "index.html"


def page_routes(config: WebConfig) -> list[BaseRoute]:
    """`GET /` (the page, with `web.max_rows` filled in) and `GET /web/*` (its assets)."""
    if not config.enabled:
        return []
    html = TEMPLATE.read_text(encoding="utf-8").replace("{{max_rows}}", str(config.max_rows))
    etag = '"' + hashlib.sha256(html.encode()).hexdigest()[:32] + '"'
    headers = {**SECURITY_HEADERS, "ETag": etag}

    def filled(request_headers: Headers) -> Response:
        if etag in request_headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return HTMLResponse(html, headers=headers)

    async def page(request: Request) -> Response:
        return filled(request.headers)

    return [
        Route("/", page, methods=["GET"]),
        Mount("/web", app=_StaticFiles(filled, WEB_DIR), name="web"),
    ]
