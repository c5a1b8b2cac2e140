"""The bearer-token check every data route shares (HTTP and WebSocket alike)."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response


def check_bearer(conn: HTTPConnection, token: str | None, *, query_param: bool = False) -> bool:
    """True when no token is configured or the connection carries it: `Authorization: Bearer T`,
    or (for WebSockets, which browsers cannot give headers) `?token=T`. Constant-time compare."""
    if not token:
        return True
    header = conn.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        given = header[7:]
    else:
        given = conn.query_params.get("token", "") if query_param else ""
    return hmac.compare_digest(given.encode(), token.encode())


def unauthorized() -> Response:
    return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
