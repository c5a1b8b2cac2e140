"""The built-in live page: `GET /` and its static files under `/web/`.

The page is plain HTML, CSS and JavaScript shipped in `sidecar/web/` (no build
step, nothing fetched from a CDN). It talks only to the sidecar's own public
routes, `WS /v1/tail` and `GET /v1/stats`, so it needs nothing on the server
beyond serving its files. The page itself holds no data, so it is served without
a token; the routes it calls check `auth.token` and the page asks for it.
"""

from __future__ import annotations

from pathlib import Path

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
    """Starlette's StaticFiles (which refuses paths outside its directory), plus our headers."""

    def file_response(self, full_path: str | Path, stat_result, scope: Scope, status_code: int = 200) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


def page_routes(config: WebConfig) -> list[BaseRoute]:
    """`GET /` (the page, with `web.max_rows` filled in) and `GET /web/*` (its assets)."""
    if not config.enabled:
        return []
    html = (WEB_DIR / "index.html").read_text(encoding="utf-8").replace("{{max_rows}}", str(config.max_rows))

    async def page(request: Request) -> Response:
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    return [
        Route("/", page, methods=["GET"]),
        Mount("/web", app=_StaticFiles(directory=WEB_DIR), name="web"),
    ]
