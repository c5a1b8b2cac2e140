"""The built-in live page: `GET /` and its static files under `/web/`.

The page is plain HTML, CSS and JavaScript shipped in `sidecar/web/` (no build
step, nothing fetched from a CDN). It talks only to the sidecar's own public
routes, `WS /v1/tail` and `GET /v1/stats`, so it needs nothing on the server
beyond serving its files. The page itself holds no data, so it is served without
a token; the routes it calls check `auth.token` and the page asks for it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
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

    def __init__(self, page: Callable[[Headers], Response], enabled: Callable[[], bool], directory: Path):
        super().__init__(directory=directory)
        self._page = page
        self._enabled = enabled

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not self._enabled():
            return _not_found()
        return await super().get_response(path, scope)

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        if Path(full_path).resolve() == TEMPLATE.resolve():
            return self._page(Headers(scope=scope))
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


TEMPLATE = WEB_DIR / "index.html"


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404)  # what Starlette answers where no route is


@functools.lru_cache(maxsize=4)
def _render(max_rows: int) -> tuple[str, str]:
    """The page with `max_rows` filled in, and its ETag (a reload may change max_rows)."""
    html = TEMPLATE.read_text(encoding="utf-8").replace("{{max_rows}}", str(max_rows))
    return html, '"' + hashlib.sha256(html.encode()).hexdigest()[:32] + '"'


def page_routes(web: Callable[[], WebConfig]) -> list[BaseRoute]:
    """`GET /` (the page, with `web.max_rows` filled in) and `GET /web/*` (its assets); both
    404 while `web.enabled` is false. `web` gives the config in force at each request."""

    def filled(request_headers: Headers) -> Response:
        html, etag = _render(web().max_rows)
        headers = {**SECURITY_HEADERS, "ETag": etag}
        if etag in request_headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return HTMLResponse(html, headers=headers)

    async def page(request: Request) -> Response:
        if not web().enabled:
            return _not_found()
        return filled(request.headers)

    return [
        Route("/", page, methods=["GET"]),
        Mount("/web", app=_StaticFiles(filled, lambda: web().enabled, WEB_DIR), name="web"),
    ]
