"""uvicorn's websockets-sansio protocol, with a door for the live tail to write ready frames.

Through ASGI, every tail message is a `websocket.send` dict carrying a str: Starlette's
wrapper, uvicorn's `send` (an await on its `writable` event, a UTF-8 encode of the whole
text, the websockets state machine framing it, a join) and one task woken per client to
drive it. The hub already holds the message as UTF-8 bytes, identical for every client of
a filter group that keeps up: it frames it once (`sinks.tail.text_frame`) and writes the
same bytes to each member's transport in one pass (see `TailHub`).

Everything else stays on the ASGI path: the handshake (token, Origin, filter), the
receive loop, control replies to a client that has no wire, close codes, pings (uvicorn's
keepalive writes through the same transport, a whole frame per write, so frames never
interleave).

This relies on uvicorn internals (`WebSocketsSansIOProtocol.handle_connect`, `.scope`,
`.transport`, `.conn`, `.close_sent`, `.disconnected`) and on websockets' sans-I/O
`ServerProtocol.state`: the floors in pyproject.toml have them (tests/floors/smoke.py tails
through this path on exactly those releases), tests/test_tail_wire.py checks that the real
route gets a wire, and a uvicorn without one of them gets no wire (the ASGI path serves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

# Where the route finds the connection's wire in its ASGI scope (copied into every child scope).
SCOPE_KEY = "sidecar.tail_wire"
# The uvicorn internals `is_open` and `write_frame` read. A uvicorn without one of them gets no
# wire: its clients are sent to through ASGI (slower, still correct) instead of failing.
NEEDS = ("transport", "conn", "close_sent", "disconnected")


class TailWireProtocol(WebSocketsSansIOProtocol):
    """The WebSocket protocol `agent-sidecar run` serves with: uvicorn's, plus `write_frame`."""

    on_writable: Callable[[], None] | None = None  # the hub's: this client may be written again
    write_paused = False  # the transport's buffer is above its high-water mark

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = cast("dict[str, Any] | None", self.__dict__.get("scope"))
        if scope is not None and all(hasattr(self, name) for name in NEEDS):  # no scope: upgrade refused
            scope[SCOPE_KEY] = self

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_paused = False
        if self.on_writable is not None:
            self.on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_writable = None  # the hub holds the client until the route sees the disconnect
        super().connection_lost(exc)

    def is_open(self) -> bool:
        """True while data frames may go out: no close sent or received, the socket not closing."""
        return (
            not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
            and not self.transport.is_closing()
        )

    def write_frame(self, frame: bytes) -> None:
        """Write one whole frame (never waits; the transport buffers). Call only when `is_open()`."""
        self.transport.write(frame)

    def write_frames(self, frames: list[bytes]) -> None:
        """Write whole frames in order, in one system call where the loop can (uvloop: writev).
        Call only when `is_open()`."""
        self.transport.writelines(frames)
