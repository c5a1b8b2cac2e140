"""WindowSink: what the pipeline, the /v1/stats route and the scrape see of the window store.

The store changes on one thread only: the pipeline's (the event loop's, in the app). A query
or a scrape reads a `Snapshot` made on that thread; a scrape (in a worker thread) asks the
loop for one and waits, so it never touches the store itself, and no lock is needed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric

from sidecar.config import WindowsConfig, parse_duration
from sidecar.sinks.labelsets import LabelSets
from sidecar.sinks.window import collector
from sidecar.sinks.window.query import DEFAULT_LIMIT, Query, stats_document
from sidecar.sinks.window.store import Window, WindowStore
from sidecar.sinks.window.view import Snapshot
from sidecar.types import Batch

SCRAPE_WAIT = 5.0  # seconds a scrape waits for the loop to take its snapshot before using the last one


class WindowSink:
    """Exact sliding-window statistics, queried by `/v1/stats` and exported as gauges."""

    name = "window"

    def __init__(
        self, config: WindowsConfig, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
        label_sets: LabelSets | None = None,
    ):
        self.config = config
        self.clock = clock
        self.label_sets = label_sets if label_sets is not None else LabelSets()
        self.store = WindowStore(config, clock())
        self.index_by = tuple(config.index_by)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: int | None = None
        self._last_scrape = self._scrape_snapshot_here(copy=True)
        self.queries_refused = Counter(
            "sidecar_stats_requests_refused", "/v1/stats requests answered 400, by what was wrong with them.", ["reason"], registry=registry
        )
        if registry is not None:
            registry.register(self)

    # -- the pipeline's side (the writer thread) ---------------------------

    async def start(self) -> None:
        # From here on the loop's thread is the only writer; scrapes from other threads ask it.
        self._loop = asyncio.get_running_loop()
        self._writer = threading.get_ident()

    async def close(self) -> None:
        self._loop = None  # the pipeline has drained: nothing writes any more

    def consume(self, batch: Batch) -> None:
        self.store.consume(batch, self.clock(), self.label_sets.of(batch))

    def maintain(self, now: float) -> None:
        self.store.flush(now, fold=True)

    def flush(self, now: float | None = None) -> None:
        """Evict what left each window by `now` and file every consumed event."""
        self.store.flush(self.clock() if now is None else now, fold=True)

    @property
    def late(self) -> int:
        return self.store.late

    @property
    def started(self) -> float:
        return self.store.started

    # -- queries --------------------------------------------------------------

    def window_names(self) -> list[str]:
        return [w.name for w in self.store.windows]

    def find_window(self, text: str) -> Window | None:
        for w in self.store.windows:
            if w.name == text:
                return w
        try:
            seconds = parse_duration(float(text) if text.replace(".", "", 1).isascii() and text.replace(".", "", 1).isdigit() else text)
        except ValueError:
            return None
        return next((w for w in self.store.windows if w.seconds == seconds), None)

    def keys(self) -> int:
        """Interned key combinations: what a query without rows costs in proportion to."""
        return len(self.store.keys)

    def snapshot(self, query: Query, copy: bool = False) -> Snapshot:
        """What `query` reads, as of now (on the writer thread). copy=False: read it right away."""
        if query.window is None:
            windows = self.store.windows
        else:
            w = self.find_window(query.window)
            if w is None:
                raise KeyError(query.window)
            windows = [w]
        return self.store.snapshot(
            self.clock(), windows, rows=query.reads_rows(self.index_by), cumulative=query.window is None,
            indexed=query.indexed(self.index_by), copy=copy,
        )

    def stats(self, window: str | None = None, filters: dict[str, str] | None = None, by: str | None = None, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The /v1/stats document, computed here and now (on the writer thread)."""
        query = Query(window, filters or {}, by, limit)
        return stats_document(self.snapshot(query), query)

    # -- exposition -----------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # families are built at scrape time

    def collect(self) -> Iterator[Metric]:
        yield from collector.collect(self._scrape_snapshot(), self.config.prometheus_by, self.config.prometheus_by_limit)

    def _scrape_snapshot_here(self, copy: bool) -> Snapshot:
        rows = bool(self.config.prometheus_by)
        return self.store.snapshot(self.clock(), self.store.windows, rows=rows, cumulative=False, copy=copy)

    def _scrape_snapshot(self) -> Snapshot:
        loop = self._loop
        if loop is None or threading.get_ident() == self._writer:
            return self._scrape_snapshot_here(copy=False)  # read at once, on this thread
        future: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(self._scrape_snapshot_here(copy=True))
            except BaseException as exc:  # the scrape thread re-raises it
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
            self._last_scrape = future.result(timeout=SCRAPE_WAIT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            pass  # the loop is closing or stalled: the last snapshot is still consistent
        return self._last_scrape
