"""When the window store is saved and restored (windows.snapshot_path, windows.snapshot_every).

At start, before any listener takes events, the file is read (in a worker thread) and put into
the store. Every `snapshot_every` the store is copied in slices, one per event-loop turn with
ingest going on between them (persist.SlicedCopy: consistent as of its last turn), and the copy
is written from a worker thread; the loop's longest pause is one slice or the last turn (a flush
and the O(keys) state), well under a /v1/stats call. At shutdown, after the pipeline has drained
and nothing writes the store any more, the store is copied at once and written from a worker
thread; that save waits for a periodic one still running, so it is always the last renamed.

Nothing here stops the sidecar: a file that cannot be read is a warning and an empty start
(counted by reason), a save that fails is an error in the log and the previous file stays.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from sidecar.config import WindowsConfig
from sidecar.sinks.window.persist import Captured, SlicedCopy, SnapshotError, capture, read_file, restore, write_file
from sidecar.sinks.window.sink import WindowSink
from sidecar.sinks.window.store import WindowStore

log = logging.getLogger("agent_sidecar.window")

LOAD_RESULTS = ("restored", "missing", "unreadable", "corrupt", "foreign", "version", "config", "inconsistent")


class WindowAutosave:
    """The snapshot file of one WindowSink: `load` at start, `run` while serving, `stop` at shutdown."""

    def __init__(self, sink: WindowSink, config: WindowsConfig, registry: CollectorRegistry | None, clock: Callable[[], float] = time.time):
        self.sink = sink
        self.config = config
        self.path = config.snapshot_path
        self.clock = clock
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self.loads = Counter(
            "sidecar_window_snapshot_loads",
            "Window snapshot files read at start, by result: restored, or why the windows started empty "
            "(missing, unreadable, corrupt, foreign, version, config, inconsistent).",
            ["result"],
            registry=registry,
        )
        self.writes = Counter(
            "sidecar_window_snapshot_writes", "Window snapshots written (ok) or not (error: see the log).", ["result"], registry=registry
        )
        self.last_write = Gauge(
            "sidecar_window_snapshot_last_success_timestamp_seconds", "Unix time of the last window snapshot written.", registry=registry
        )
        self.size = Gauge("sidecar_window_snapshot_bytes", "Size of the last window snapshot written, in bytes.", registry=registry)
        self.duration = Gauge(
            "sidecar_window_snapshot_last_duration_seconds",
            "Time the last window snapshot written took, from its first copy to the rename.",
            registry=registry,
        )
        self.pause = Gauge(
            "sidecar_window_snapshot_last_pause_seconds",
            "The longest the last window snapshot written held the event loop at once (ingest waited that long).",
            registry=registry,
        )
        for result in LOAD_RESULTS:
            self.loads.labels(result)
        for result in ("ok", "error"):
            self.writes.labels(result)

    async def load(self) -> None:
        """Fill the sink's store from the file; on any problem, warn and keep an empty store."""
        try:
            arrays = await asyncio.to_thread(read_file, self.path)
            restored = restore(self.sink.store, arrays, self.clock())
        except FileNotFoundError:
            self.loads.labels("missing").inc()
            log.info("window snapshot %s: no file yet, the windows start empty", self.path)
            return
        except (SnapshotError, OSError) as exc:
            self.sink.store = WindowStore(self.config, self.clock())  # a failed restore may have half filled it
            reason = exc.reason if isinstance(exc, SnapshotError) else "unreadable"
            self.loads.labels(reason).inc()
            what = str(exc) if isinstance(exc, SnapshotError) else f"cannot read it: {exc.strerror or exc}"
            log.warning("window snapshot %s ignored (%s), the windows start empty: %s", self.path, reason, what)
            return
        self.loads.labels("restored").inc()
        if restored.complete:
            log.info("window snapshot %s: restored %d events", self.path, restored.events)
        else:
            log.warning(
                "window snapshot %s: restored %d events from a periodic save (the sidecar did not shut down cleanly): "
                "events after it are missing, and the windows say exact: false until this restart has left them",
                self.path, restored.events,
            )

    async def run(self) -> None:
        """Save every `snapshot_every` seconds until `stop`."""
        # On a fixed grid, so that a save's own duration does not stretch the interval (a crash
        # loses at most `snapshot_every`); a save longer than the interval skips the ticks it overran.
        loop = asyncio.get_running_loop()
        every = self.config.snapshot_every
        due = loop.time() + every
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
                return
            except TimeoutError:
                await self.save(final=False)
                due += every * (1 + max(0, math.floor((loop.time() - due) / every)))

    async def stop(self, task: asyncio.Task[None]) -> None:
        """After the pipeline has drained: end `run` (after a save in progress), then save a last time."""
        self._stop.set()
        await task
        await self.save(final=True)

    async def save(self, final: bool) -> None:
        """One save: copied in slices while serving, at once at shutdown; written from a thread."""
        async with self._lock:
            started = time.perf_counter()
            try:
                if final:
                    now = self.clock()
                    arrays = capture(self.sink.store, now, final=True)
                    paused = time.perf_counter() - started
                    size = await asyncio.to_thread(write_file, self.path, arrays)
                else:
                    now, paused, captured = await self._copy()
                    size = await asyncio.to_thread(lambda: write_file(self.path, captured.entries()))
            except OSError as exc:
                self.writes.labels("error").inc()
                log.error("window snapshot %s not written, the previous one stays: %s", self.path, exc.strerror or exc)
                return
            self.writes.labels("ok").inc()
            self.last_write.set(now)
            self.size.set(size)
            self.duration.set(time.perf_counter() - started)
            self.pause.set(paused)
            log.log(
                logging.INFO if final else logging.DEBUG,
                "window snapshot %s written: %d bytes in %.0f ms (the event loop paused %.1f ms)",
                self.path, size, (time.perf_counter() - started) * 1000, paused * 1000,
            )

    async def _copy(self) -> tuple[float, float, Captured]:
        """The store copied in slices, one per loop turn: (as of when, the longest turn, the copy)."""
        store = self.sink.store
        turn = time.perf_counter()
        copy = SlicedCopy(store)
        longest = 0.0
        while copy.step():
            longest = max(longest, time.perf_counter() - turn)
            await asyncio.sleep(0)  # whatever is ready (a batch, a request) runs before the next slice
            turn = time.perf_counter()
        now = self.clock()
        captured = copy.finish(now, final=False)
        return now, max(longest, time.perf_counter() - turn), captured
