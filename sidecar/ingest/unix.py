"""Unix stream socket listener: NDJSON in, batches out, backpressure through the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable

from sidecar.config import IngestConfig
from sidecar.exceptions import SocketInUseError
from sidecar.pipeline import Pipeline
from sidecar.protocol import EventDecoder, LineFramer
from sidecar.selfmetrics import SelfMetrics
from sidecar.types import Batch, Rejection

log = logging.getLogger("agent_sidecar.unix")
TRANSPORT = "unix"


def claim_socket_path(path: str) -> None:
    """Remove a stale socket file left by a dead process; refuse if a live one answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUseError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("replacing stale socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise SocketInUseError(f"another process is listening on {path}; is a sidecar already running?")


class UnixListener:
    """Accepts many long-lived clients; each read becomes one batch."""

    def __init__(
        self,
        path: str,
        mode: int,
        config: IngestConfig,
        decoder: EventDecoder,
        pipeline: Pipeline,
        metrics: SelfMetrics,
        clock: Callable[[], float],
    ):
        self.path = path
        self.mode = mode
        self.config = config
        self.decoder = decoder
        self.pipeline = pipeline
        self.metrics = metrics
        self.clock = clock
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> None:
        claim_socket_path(self.path)
        old = os.umask(0o777 & ~self.mode)  # never world-writable, not even for an instant
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path, limit=self.config.read_size)
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        log.info("listening on unix:%s (mode %04o)", self.path, self.mode)

    async def stop(self) -> None:
        """Stop intake: no new clients, close open ones after their current batch is queued."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._clients):
            writer.transport.pause_reading()
            writer.close()
        # 3.11's wait_closed() does not wait for handlers; a handler may still be queueing a batch.
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.config.max_connections:
            self.metrics.connections_refused.inc()
            writer.close()
            return
        self._clients.add(writer)
        task = asyncio.current_task()
        self._handlers.add(task)
        self.metrics.connections.inc()
        framer = LineFramer(self.config.max_event_bytes)
        read_size = self.config.read_size
        try:
            while True:
                try:
                    data = await reader.read(read_size)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                lines, oversized = framer.feed(data)
                await self._ingest(lines, oversized)
            tail = framer.finish()
            if tail:
                await self._ingest([tail], 0)
        finally:
            self._clients.discard(writer)
            self._handlers.discard(task)
            self.metrics.connections.dec()
            writer.close()

    async def _ingest(self, lines: list[bytes], oversized: int) -> None:
        now = self.clock()
        events, raws, rejected = self.decoder.decode(lines, now)
        if oversized:
            msg = f"line longer than ingest.max_event_bytes ({self.config.max_event_bytes})"
            rejected += [Rejection(-1, "too_large", msg)] * oversized
        if rejected:
            log.debug("unix: rejected %d line(s), first: %s: %s", len(rejected), rejected[0].reason, rejected[0].message)
        self.metrics.count(TRANSPORT, len(events), rejected)
        if events:
            await self.pipeline.submit(Batch(events, raws, now, TRANSPORT))
