"""`WS /v1/tail`: the handshake checks (token, Origin, filter, capacity) and the receive loop.

Everything about matching and sending lives in `sinks.tail.TailHub`; this module only
turns one WebSocket connection into one hub client and feeds it the client's messages.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from sidecar.api.tail_wire import SCOPE_KEY
from sidecar.auth import check_bearer
from sidecar.live import LiveConfig
from sidecar.sinks.tail import FilterError, TailFilter, TailHub, parse_filter, parse_interval

PATH = "/v1/tail"
TRY_AGAIN_LATER = 1013
GOING_AWAY = 1001


class RedactTokens(logging.Filter):
    """uvicorn logs each WebSocket's path with its query string; `?token=` must not reach logs."""

    _pattern = re.compile(r"([?&]token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(self._pattern.sub(r"\1<redacted>", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = self._pattern.sub(r"\1<redacted>", record.msg)
        return True


REDACT_TOKENS = RedactTokens()


def origin_ok(ws: WebSocket, allowed: tuple[str, ...]) -> bool:
    """Non-browser clients send no Origin. Browsers may connect from the sidecar's own origin or
    from `tail.allowed_origins` ("*" allows any). Starlette's CORS middleware skips WebSockets."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == ws.headers.get("host")


SINGLE_PARAMS = ("token", "interval_ms")  # everything else is a filter key: repeats OR together


def parse_query(items: list[tuple[str, str]]) -> tuple[TailFilter, float]:
    """The filter and interval of a handshake's query string. A filter key may repeat (its
    values OR together); `token` and `interval_ms` may not: which one would count is a guess."""
    for name in SINGLE_PARAMS:
        given = sum(1 for k, _ in items if k == name)
        if given > 1:
            raise FilterError(f"{name} is given {given} times; give it once")
    tail_filter = parse_filter([(k, v) for k, v in items if k not in SINGLE_PARAMS])
    interval = next((parse_interval(v) for k, v in items if k == "interval_ms"), 0.0)
    return tail_filter, interval


def tail_route(hub: TailHub, live: LiveConfig) -> WebSocketRoute:
    logging.getLogger("uvicorn.error").addFilter(REDACT_TOKENS)  # the same instance: added once

    async def tail(ws: WebSocket) -> None:
        if not check_bearer(ws, live.tail_token(), query_param=True):
            await ws.send_denial_response(JSONResponse({"error": "missing or wrong token"}, status_code=401))
            return
        if not origin_ok(ws, live.current.tail.allowed_origins):
            origin = ws.headers.get("origin")
            await ws.send_denial_response(JSONResponse({"error": f"origin {origin} is not allowed (tail.allowed_origins)"}, status_code=403))
            return
        try:
            tail_filter, interval = parse_query(ws.query_params.multi_items())
        except FilterError as exc:
            await ws.send_denial_response(JSONResponse({"error": str(exc)}, status_code=400))
            return
        await ws.accept()
        if hub.closing:
            await ws.close(GOING_AWAY, "sidecar shutting down")
            return
        if hub.full:
            await ws.close(TRY_AGAIN_LATER, f"tail.max_clients ({hub.config.max_clients}) reached")
            return
        # Served by TailWireProtocol (`agent-sidecar run`): events go straight to the socket.
        client = hub.connect(ws, tail_filter, interval, wire=ws.scope.get(SCOPE_KEY))
        try:
            while True:
                await client.room.wait()  # MAX_CONTROL replies unread: read no more requests
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                hub.handle(client, message.get("text") or message.get("bytes") or b"")
        finally:
            await hub.disconnect(client)

    return WebSocketRoute(PATH, tail)
