"""POST /-/reload: re-read the --config file, as SIGHUP does (see sidecar/reload.py).

200 with what changed and what needs a restart; 400 with every problem and its YAML path, as
`check-config` prints them, and nothing changed. Token-protected like every data route: it
changes what the sidecar does.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.auth import check_bearer, unauthorized
from sidecar.reload import Reloader

PATH = "/-/reload"


def reload_route(reloader: Reloader, token: Callable[[], str | None]) -> Route:
    async def post_reload(request: Request) -> Response:
        if not check_bearer(request, token()):
            return unauthorized()
        outcome = reloader.reload(f"POST {PATH}")
        return JSONResponse(outcome.as_json(), status_code=200 if outcome.ok else 400)

    return Route(PATH, post_reload, methods=["POST"])
