"""Unix stream socket listener: NDJSON in, batches out, backpressure through the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import stat
from collections.abc import Callable, Sequence

from sidecar.config import IngestConfig
from sidecar.exceptions import SidecarError, SocketInUseError
from sidecar.ingest.accept import accept_forever
from sidecar.pipeline import Pipeline
from sidecar.protocol import EventDecoder, LineFramer
from sidecar.selfmetrics import SelfMetrics
from sidecar.types import Batch, Rejection

log = logging.getLogger("agent_sidecar.unix")
TRANSPORT = "unix"


def claim_socket_path(path: str) -> None:
    """Remove a stale socket file left by a dead process; refuse if a live one answers, or if
    the socket could not be created there (each refusal says what to try)."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise SidecarError(
            f"cannot create the Unix socket {path}: directory {directory} does not exist; "
            "create it, or choose a path in an existing directory with --unix or listen.unix"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SidecarError(
            f"cannot create the Unix socket {path}: no permission to create files in {directory}; "
            "run as a user who may, or choose another path with --unix or listen.unix"
        )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUseError(f"{path} exists and is not a socket; refusing to replace it: remove it, or choose another path with --unix")
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
    raise SocketInUseError(
        f"another process is listening on {path}; is a sidecar already running? Stop it, or choose another path with --unix"
    )


WATCH_INTERVAL = 1.0  # seconds between checks of the socket file and of idle clients
BACKLOG = 128  # connections the kernel holds for us while every slot is taken
ROOM_POLL = 0.25  # while full, how often to look for a waiting client and an unproductive one to evict


class UnixListener:
    """Accepts many long-lived clients; each read becomes one batch.

    A client's worth is what it delivers: the time of its last complete line (not of its last
    byte, so a client trickling a byte every few seconds counts as silent). A watch task checks
    once a second that the socket file is still there (recreating it if someone deleted it) and
    closes clients that delivered nothing for `ingest.idle_timeout`. At `ingest.max_connections`
    the listener stops accepting: a new client waits in the kernel's backlog (its bytes are kept
    and read once it is accepted; with the backlog full too, its connect() fails with EAGAIN or
    blocks, before it has written anything), and the client that delivered nothing longest, for
    `ingest.evict_after` or more, makes room.
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
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._inode: tuple[int, int] | None = None
        self._foreign_warned = False
        self._watch_task: asyncio.Task[None] | None = None
        self._clients: dict[asyncio.StreamWriter, float] = {}  # -> clock() of its last complete line
        self._opening = 0  # accepted, handler not yet registered: they hold a slot too
        self._handlers: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()

    def bind(self) -> None:
        """Create the socket file (with its mode from the first instant) and listen on it."""
        claim_socket_path(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777 & ~self.mode)  # never world-writable, not even for an instant
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise SidecarError(f"cannot create the Unix socket {self.path}: {exc.strerror}; choose another path with --unix or listen.unix") from None
        finally:
            os.umask(old)
        sock.listen(BACKLOG)
        os.chmod(self.path, self.mode)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._sock = sock

    async def start(self) -> None:
        if self._sock is None:
            self.bind()
        self._accept_on_current()
        self._watch_task = asyncio.create_task(self._watch(), name=f"unix-watch:{self.path}")
        log.info("listening on unix:%s (mode %04o)", self.path, self.mode)

    def _accept_on_current(self) -> None:
        assert self._sock is not None
        self._accepting = asyncio.create_task(
            accept_forever(self._sock, f"unix:{self.path}", self._accepted, self._accept_failed, self._wait_for_room),
            name=f"unix-accept:{self.path}",
        )

    async def _stop_accepting(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()  # before closing: the loop must not wait on a closed descriptor
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._sock is not None:
            self._sock.close()

    async def stop(self) -> None:
        """Stop intake: no new clients, close open ones after their current batch is queued."""
        if self._sock is None:
            return
        if self._watch_task is not None:
            self._watch_task.cancel()
        await self._stop_accepting()
        for writer in list(self._clients):
            transport = writer.transport
            if isinstance(transport, asyncio.ReadTransport):
                transport.pause_reading()
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers)
        if self._is_ours():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._sock = None

    def _is_ours(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    async def maintain(self) -> None:
        """Recreate a deleted socket file and close idle clients (the watch task calls this)."""
        if self._sock is None:
            return
        if not os.path.lexists(self.path):
            await self._stop_accepting()  # it accepts nothing any more; its clients carry on
            self.bind()
            self._accept_on_current()
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

    def _full(self) -> bool:
        return len(self._clients) + self._opening >= self.config.max_connections

    def _make_room(self) -> bool:
        """Close the client that delivered nothing longest, if it has for ingest.evict_after."""
        if not self._clients:
            return False
        writer = min(self._clients, key=self._clients.__getitem__)
        if self._clients[writer] > self.clock() - self.config.evict_after:
            return False
        self._close_idle(writer)
        return True

    def _someone_waits(self) -> bool:
        if self._sock is None:
            return False
        poller = select.poll()  # not select.select: it fails on descriptors above 1023
        poller.register(self._sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def _wait_for_room(self) -> None:
        counted = False
        while self._full():
            if self._someone_waits():
                if self._make_room():
                    continue
                if not counted:  # once per client that has to wait
                    counted = True
                    self.metrics.connections_refused.inc()
                    log.warning(
                        "unix:%s: all %d slots (ingest.max_connections) hold clients that deliver; a new client waits in the backlog",
                        self.path, self.config.max_connections,
                    )
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), ROOM_POLL)

    def _accept_failed(self, code: str) -> None:
        self.metrics.accept_errors.labels(TRANSPORT, code).inc()

    def _accepted(self, conn: socket.socket) -> None:
        self._opening += 1
        task = asyncio.create_task(self._open(conn))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _open(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=self.config.read_size)
        except OSError:
            conn.close()
            self._opening -= 1
            self._room.set()
            return
        self._opening -= 1
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients = self._clients
        clock = self.clock
        clients[writer] = clock()
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
                lines, oversized = framer.feed_block(data)
                if (lines or oversized) and writer in clients:
                    clients[writer] = clock()  # delivered something; bytes alone do not count
                await self._ingest(lines, oversized)
            tail = framer.finish()
            if tail:
                await self._ingest([tail], 0)
        finally:
            clients.pop(writer, None)
            self.metrics.connections.dec()
            self._room.set()
            writer.close()

    async def _ingest(self, lines: Sequence[bytes], oversized: int) -> None:
        now = self.clock()
        events, raws, rejected, numbered = self.decoder.decode_numbered(lines, now)
        if oversized:
            msg = f"line longer than ingest.max_event_bytes ({self.config.max_event_bytes})"
            rejected += [Rejection(-1, "too_large", msg)] * oversized
        if rejected:
            log.debug("unix: rejected %d line(s), first: %s: %s", len(rejected), rejected[0].reason, rejected[0].message)
        self.metrics.count(TRANSPORT, len(events), rejected)
        if events:
            await self.pipeline.submit(Batch(events, raws, now, TRANSPORT, numbered))
