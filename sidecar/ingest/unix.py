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


WATCH_INTERVAL = 1.0  # seconds between checks of the socket file and of idle clients
EVICT_IDLE_AFTER = 10.0  # when full, a client silent this long makes room for a new one


class UnixListener:
    """Accepts many long-lived clients; each read becomes one batch.

    A watch task checks once a second that the socket file is still there (recreating it
    if someone deleted it) and closes clients silent for `ingest.idle_timeout`. When
    `ingest.max_connections` is reached, the client silent longest makes room for the new
    one if it has been silent `EVICT_IDLE_AFTER` seconds, so idle or half-open
    connections cannot lock real clients out.
    """

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
        self._retired: list[asyncio.AbstractServer] = []  # servers whose socket file was deleted
        self._inode: tuple[int, int] | None = None
        self._foreign_warned = False
        self._watch_task: asyncio.Task | None = None
        self._clients: dict[asyncio.StreamWriter, float] = {}  # -> clock() of its last read
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> None:
        claim_socket_path(self.path)
        self._server = await self._listen()
        self._watch_task = asyncio.create_task(self._watch(), name=f"unix-watch:{self.path}")
        log.info("listening on unix:%s (mode %04o)", self.path, self.mode)

    async def _listen(self) -> asyncio.AbstractServer:
        old = os.umask(0o777 & ~self.mode)  # never world-writable, not even for an instant
        try:
            server = await asyncio.start_unix_server(self._serve, self.path, limit=self.config.read_size)
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        return server

    async def stop(self) -> None:
        """Stop intake: no new clients, close open ones after their current batch is queued."""
        if self._server is None:
            return
        if self._watch_task is not None:
            self._watch_task.cancel()
        self._server.close()
        for writer in list(self._clients):
            writer.transport.pause_reading()
            writer.close()
        # 3.11's wait_closed() does not wait for handlers; a handler may still be queueing a batch.
        if self._handlers:
            await asyncio.wait(self._handlers)
        for server in (*self._retired, self._server):
            await server.wait_closed()
        if self._is_ours():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._server = None

    def _is_ours(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    async def maintain(self) -> None:
        """Recreate a deleted socket file and close idle clients (the watch task calls this)."""
        if self._server is None:
            return
        if not os.path.lexists(self.path):
            self._server.close()  # it accepts nothing any more; its clients carry on
            self._retired.append(self._server)
            self._server = await self._listen()
            self._foreign_warned = False
            self.metrics.socket_recreated.inc()
            log.warning("socket file %s was deleted under the running sidecar; recreated it", self.path)
        elif not self._is_ours() and not self._foreign_warned:
            self._foreign_warned = True  # someone else's file now: never delete or replace it
            log.warning("%s has been replaced by another file; Unix ingest is unreachable until restart", self.path)
        cutoff = self.clock() - self.config.idle_timeout
        for writer, last in list(self._clients.items()):
            if last < cutoff:
                self._close_idle(writer)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self.maintain()
            except Exception:  # never let housekeeping kill the listener
                log.exception("unix listener maintenance failed")

    def _close_idle(self, writer: asyncio.StreamWriter) -> None:
        self._clients.pop(writer, None)
        self.metrics.idle_closed.inc()
        writer.close()  # its handler sees EOF, decodes any partial line and exits

    def _make_room(self) -> bool:
        """At max_connections: close the client silent longest, if it has been for a while."""
        if not self._clients:
            return False
        writer = min(self._clients, key=self._clients.__getitem__)
        if self._clients[writer] > self.clock() - EVICT_IDLE_AFTER:
            return False
        self._close_idle(writer)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.config.max_connections and not self._make_room():
            self.metrics.connections_refused.inc()
            writer.close()
            return
        clients = self._clients
        clock = self.clock
        clients[writer] = clock()
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
                if writer in clients:
                    clients[writer] = clock()
                lines, oversized = framer.feed(data)
                await self._ingest(lines, oversized)
            tail = framer.finish()
            if tail:
                await self._ingest([tail], 0)
        finally:
            clients.pop(writer, None)
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
