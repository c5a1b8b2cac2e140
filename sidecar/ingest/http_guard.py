"""Limits uvicorn does not set on an HTTP connection: how many may be open, how long a request's
headers and body may take, how large its headers may be. Each refusal gets an HTTP answer when
one can still be given, and a counter.

uvicorn's keep-alive timer stops at a connection's first byte, so a client that sends headers or
a body one byte at a time (slowloris) would hold its connection, and a file descriptor, forever;
nothing caps how many connections are open or how many header bytes a client may send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024
LINGER_SECONDS = 2.0  # how long a refused connection's remaining bytes are read and dropped
MAX_LINGERING = 64  # refused connections lingering at once; beyond, refusals are abrupt (each holds an fd)


@dataclass
class HttpGuard:
    """The limits one server applies and the counters its refusals go to."""

    header_timeout: float
    body_timeout: float
    max_connections: int
    on_header_timeout: Callable[[], None]
    on_header_too_large: Callable[[], None]
    on_body_timeout: Callable[[], None]
    on_connection_refused: Callable[[], None]
    lingering: int = 0  # refused connections still draining (not counted against max_connections)


def _answer(status: str, error: str) -> bytes:
    body = ('{"error":"' + error + '"}').encode()
    head = f"HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


CONNECTIONS_FULL = _answer("503 Service Unavailable", "too many connections: ingest.max_http_connections reached, retry later")
HEADERS_TOO_LARGE = _answer("431 Request Header Fields Too Large", "request headers exceed 64 KiB")
BODY_TIMEOUT = _answer("408 Request Timeout", "request body not complete within ingest.body_timeout")


def guarded_http_protocol(guard: HttpGuard) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `guard`'s limits: a connection beyond
    `max_connections` gets 503; headers must be complete within `header_timeout` of the
    connection (or of the request's first byte) and within MAX_HEADER_BYTES (else closed,
    431 for the size); a body must be complete within `body_timeout` of its headers (408)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) - guard.lingering > guard.max_connections:
                guard.on_connection_refused()
                self._refuse(CONNECTIONS_FULL)
                return
            self._arm_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._refused:
                self._refused = False
                guard.lingering -= 1
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # discard until the lingering close: unread bytes at close() would reset the answer
            super().data_received(data)
            if self._header_deadline is not None:  # still waiting for the end of the headers
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                    guard.on_header_too_large()
                    self._refuse(HEADERS_TOO_LARGE)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_deadline is None:
                self._arm_headers()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._body_deadline = self.loop.call_later(guard.body_timeout, self._body_expired)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm()  # the WebSocket protocol takes the connection over, with its own keepalive
            super().handle_websocket_upgrade()

        def _refuse(self, answer: bytes) -> None:
            """Answer and half-close, then read and drop what the client still sends for a
            while: closing on unread bytes would reset the connection before it reads the answer."""
            self._disarm()
            if guard.lingering >= MAX_LINGERING:
                self.transport.abort()
                return
            self._refused = True
            guard.lingering += 1
            self.transport.write(answer)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

        def _arm_headers(self) -> None:
            self._header_bytes = 0
            self._header_deadline = self.loop.call_later(guard.header_timeout, self._headers_expired)

        def _disarm(self) -> None:
            for handle in (self._header_deadline, self._body_deadline):
                if handle is not None:
                    handle.cancel()
            self._header_deadline = self._body_deadline = None

        def _headers_expired(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                guard.on_header_timeout()
                self.transport.close()

        def _body_expired(self) -> None:
            self._body_deadline = None
            if self.transport.is_closing():
                return
            guard.on_body_timeout()
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()  # an answer is under way: nothing clearer can be said
            else:
                self._refuse(BODY_TIMEOUT)

    return GuardedHttpToolsProtocol
