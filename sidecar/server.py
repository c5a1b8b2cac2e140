"""Run one sidecar under uvicorn, started programmatically (one process, one loop, one worker)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sidecar.app import Sidecar, build_app
from sidecar.config import Config
from sidecar.ingest.unix import claim_socket_path

WS_MAX_MESSAGE = 64 * 1024


def bind_http(address: str) -> socket.socket:
    """Bind HOST:PORT ourselves so port 0 works and the real port is known before serving."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
    # it a keep-alive response written in two parts waits ~40 ms for the delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def loop_factory():
    """uvloop's event loop when installed (it roughly halves per-read and per-request overhead)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return None
    return uvloop.new_event_loop


MAX_HEADER_BYTES = 64 * 1024


LINGER_SECONDS = 2.0  # how long a refused connection's remaining bytes are read and dropped


def guarded_http_protocol(header_timeout: float, on_refused: Callable[[], None]) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline and a size cap for each request's headers.

    uvicorn's keep-alive timer stops at a connection's first byte, so a client that sends
    headers one byte at a time (slowloris) would hold its connection forever, and nothing
    caps the header bytes it may send. Here headers must be complete within
    `header_timeout` seconds of the connection (or of the request's first byte) and within
    MAX_HEADER_BYTES, or the connection is closed (431 for the size)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # discard until the lingering close: unread bytes at close() would reset the 431
            super().data_received(data)
            if self._deadline is not None:  # still waiting for the end of the headers
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                    self._disarm()
                    on_refused()
                    self._refused = True
                    self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                    if self.transport.can_write_eof():
                        self.transport.write_eof()
                    self.loop.call_later(LINGER_SECONDS, self.transport.close)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            self._header_bytes = 0
            self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                on_refused()
                self.transport.close()

    return GuardedHttpToolsProtocol


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


class SidecarServer(uvicorn.Server):
    """uvicorn waits for open connections *before* the app's lifespan shutdown runs, so long-lived
    WebSockets would hold shutdown up (uvicorn #1140). The tail hub closes its clients with 1001
    the moment shutdown starts."""

    def __init__(self, config: uvicorn.Config, sidecar: Sidecar):
        super().__init__(config)
        self.sidecar = sidecar

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.sidecar.sinks.tail.begin_shutdown()
        await super().shutdown(sockets)


def build_server(
    config: Config, *, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
) -> tuple[uvicorn.Server, socket.socket | None]:
    """A uvicorn server for one sidecar, plus its bound HTTP socket (None if HTTP is off)."""
    if config.listen.unix:
        claim_socket_path(config.listen.unix)  # fail fast, before uvicorn, with a clear message
    sock = bind_http(config.listen.http) if config.listen.http else None
    app = build_app(config, registry=registry, clock=clock, http_url=url_of(sock) if sock else None)
    metrics = app.state.sidecar.metrics
    server = SidecarServer(
        uvicorn.Config(
            app,
            http=guarded_http_protocol(config.ingest.header_timeout, metrics.http_header_timeouts.inc),
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(config.shutdown_grace)),
            ws="websockets-sansio",
            ws_per_message_deflate=False,  # a small frame must not inflate 1000x in memory
            ws_max_size=WS_MAX_MESSAGE,
            ws_ping_interval=config.tail.ping_interval,
            ws_ping_timeout=config.tail.ping_interval,
        ),
        app.state.sidecar,
    )
    return server, sock


async def serve(
    config: Config, *, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
) -> bool:
    """Serve until SIGINT/SIGTERM; False when startup failed (the reason is logged)."""
    server, sock = build_server(config, registry=registry, clock=clock)
    try:
        await server.serve(sockets=[sock] if sock else [])
    finally:
        if sock:
            sock.close()
    return server.started
