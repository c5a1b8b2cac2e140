"""Run one sidecar under uvicorn, started programmatically (one process, one loop, one worker)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import time
from collections.abc import Callable

import uvicorn
from prometheus_client import CollectorRegistry

from sidecar.api.tail_wire import TailWireProtocol
from sidecar.app import Sidecar, build_app
from sidecar.config import Config
from sidecar.exceptions import SidecarError
from sidecar.ingest.accept import accept_forever
from sidecar.ingest.http_guard import HttpGuard, guarded_http_protocol

WS_MAX_MESSAGE = 64 * 1024


def bind_http(address: str) -> socket.socket:
    """Bind HOST:PORT ourselves so port 0 works and the real port is known before serving."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
    # it a keep-alive response written in two parts waits ~40 ms for the delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise SidecarError(f"cannot listen for HTTP on {address}: {_bind_advice(exc)}") from None
    sock.set_inheritable(True)
    return sock


def _bind_advice(exc: OSError) -> str:
    """What went wrong binding an HTTP address, and what to try."""
    elsewhere = "choose another with --http HOST:PORT or listen.http (port 0 picks a free one)"
    if exc.errno == errno.EADDRINUSE:
        return f"the port is already in use (is another sidecar running?); stop that process, or {elsewhere}"
    if exc.errno == errno.EACCES:
        return f"permission denied (ports below 1024 need privileges); {elsewhere}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"the host is not an address of this machine; use 127.0.0.1 or 0.0.0.0, or {elsewhere}"
    if isinstance(exc, socket.gaierror):
        return f"the host is not an IP address ({exc.strerror}); use 127.0.0.1 or 0.0.0.0"
    return f"{exc.strerror or exc}; {elsewhere}"


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (it roughly halves per-read and per-request overhead)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return None
    return uvloop.new_event_loop


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


class SidecarServer(uvicorn.Server):
    """uvicorn, accepting HTTP connections with our own loop (sidecar/ingest/accept.py) so that
    accept() failing for lack of file descriptors is counted instead of hidden by the event loop.

    uvicorn waits for open connections *before* the app's lifespan shutdown runs, so long-lived
    WebSockets would hold shutdown up (uvicorn #1140). The tail hub closes its clients with 1001
    the moment shutdown starts."""

    def __init__(self, config: uvicorn.Config, sidecar: Sidecar, sock: socket.socket | None):
        super().__init__(config)
        self.sidecar = sidecar
        self.sock = sock
        self._accepting: asyncio.Task[None] | None = None
        self._attaching: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # no uvicorn server: we accept ourselves
        if self.sock is None or self.should_exit:
            return
        loop = asyncio.get_running_loop()
        config = self.config

        async def attach(conn: socket.socket) -> None:
            protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop
            )
            try:
                await loop.connect_accepted_socket(lambda: protocol, conn)
            except OSError:
                conn.close()  # the client left between accept() and now

        def connect(conn: socket.socket) -> None:
            task = loop.create_task(attach(conn))
            self._attaching.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._attaching.discard)

        metrics = self.sidecar.metrics
        self._accepting = loop.create_task(
            accept_forever(self.sock, "http", connect, lambda code: metrics.accept_errors.labels("http", code).inc()),
            name="http-accept",
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        await self.sidecar.sinks.tail.begin_shutdown()
        await super().shutdown(sockets)


def build_server(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    reload_from: Callable[[], Config] | None = None,
) -> tuple[SidecarServer, socket.socket | None]:
    """A uvicorn server for one sidecar, plus its bound HTTP socket (None if HTTP is off).
    Both listening sockets are bound here, so every error surfaces before uvicorn starts."""
    sock = bind_http(config.listen.http) if config.listen.http else None
    app = build_app(config, registry=registry, clock=clock, http_url=url_of(sock) if sock else None, reload_from=reload_from)
    sidecar: Sidecar = app.state.sidecar
    try:
        for listener in sidecar.listeners:
            listener.bind()
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    metrics = sidecar.metrics
    guard = HttpGuard(
        header_timeout=config.ingest.header_timeout,
        body_timeout=config.ingest.body_timeout,
        max_connections=config.ingest.max_http_connections,
        on_header_timeout=metrics.http_header_timeouts.inc,
        on_header_too_large=metrics.http_header_too_large.inc,
        on_body_timeout=metrics.http_body_timeouts.inc,
        on_connection_refused=metrics.http_connections_refused.inc,
    )
    server = SidecarServer(
        uvicorn.Config(
            app,
            http=guarded_http_protocol(guard),
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(config.shutdown_grace)),
            ws=TailWireProtocol,  # uvicorn's websockets-sansio, plus the tail's direct writes
            ws_per_message_deflate=False,  # a small frame must not inflate 1000x in memory
            ws_max_size=WS_MAX_MESSAGE,
            ws_ping_interval=config.tail.ping_interval,
            ws_ping_timeout=config.tail.ping_interval,
        ),
        sidecar,
        sock,
    )

    def apply(new: Config) -> None:  # a reload: the limits this server keeps of its own
        guard.header_timeout = new.ingest.header_timeout
        guard.body_timeout = new.ingest.body_timeout
        guard.max_connections = new.ingest.max_http_connections
        server.config.timeout_graceful_shutdown = max(1, int(new.shutdown_grace))

    sidecar.live.on_change(apply)
    return server, sock


async def serve(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    reload_from: Callable[[], Config] | None = None,
) -> bool:
    """Serve until SIGINT/SIGTERM, reloading `reload_from()` on SIGHUP; False when startup
    failed (the reason is logged). Call from the main thread: it owns the process's signals."""
    server, sock = build_server(config, registry=registry, clock=clock, reload_from=reload_from)
    sidecar = server.sidecar
    sidecar.live.on_change(lambda new: logging.getLogger().setLevel(new.log.level.upper()))
    loop = asyncio.get_running_loop()
    # uvicorn handles SIGINT and SIGTERM only; SIGHUP's default action would end the process.
    loop.add_signal_handler(signal.SIGHUP, sidecar.reloader.reload, "SIGHUP")
    try:
        await server.serve(sockets=[sock] if sock else [])
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if sock:
            sock.close()
    return server.started
