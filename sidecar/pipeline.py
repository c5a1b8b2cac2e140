"""The one consumer: batches in from a bounded queue, fanned out to every sink in order."""

from __future__ import annotations

import asyncio
import logging

from sidecar.selfmetrics import SelfMetrics
from sidecar.types import Batch, Sink, SinkDrops

log = logging.getLogger("agent_sidecar.pipeline")

_STOP = None

# A batch longer than this reaches the sinks in slices of it, with a loop turn between slices:
# one OTLP request can carry tens of thousands of spans, and the sinks run on the event loop,
# so one turn must not last the whole batch (~20 us per event). Transports' usual batches
# (a socket read, a 1,000-event POST) fit in one slice and pay nothing.
SLICE_EVENTS = 2048


class Pipeline:
    """Listeners `submit` batches; the `run` task hands each to every sink.

    Only the run task touches sink state, so sinks need no locks against each
    other. A sink that raises is logged and counted; the others still get the batch.

    `processed` counts the events every sink took. An event a sink left out (it says
    which) or a batch a sink raised on is not processed: it is counted once in
    sidecar_sink_events_dropped_total, against the first sink that dropped it, so
    accepted = processed + sink_dropped (+ whatever is still queued), exactly.
    """

    def __init__(self, sinks: list[Sink], metrics: SelfMetrics, queue_size: int):
        self.sinks = sinks
        self.metrics = metrics
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(queue_size)
        metrics.queue_depth.set_function(self._queue.qsize)
        self.processed = 0
        self.sink_dropped = 0
        self._closing = False
        self._slicing = False  # a long batch is between its slices (run)
        self._deferred: float | None = None  # a maintain that came meanwhile

    async def submit(self, batch: Batch) -> None:
        """Queue a batch, waiting for room (stream transports: backpressure)."""
        await self._queue.put(batch)

    def try_submit(self, batch: Batch) -> bool:
        """Queue a batch if there is room now (HTTP: the caller answers 503 otherwise)."""
        if self._closing:
            return False
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            return False
        return True

    async def run(self) -> None:
        queue = self._queue
        while True:
            batch = await queue.get()
            if batch is _STOP:
                return
            if len(batch.events) <= SLICE_EVENTS:
                self.process(batch)
                continue
            self._slicing = True
            try:
                for part in _slices(batch, SLICE_EVENTS):
                    self.process(part)
                    await asyncio.sleep(0)  # let the listeners, scrapes and the tail in between
            finally:
                self._slicing = False
            if self._deferred is not None:
                now, self._deferred = self._deferred, None
                self.maintain(now)

    def process(self, batch: Batch) -> None:
        n = len(batch.events)
        lost: set[int] = set()  # positions some sink dropped: each counted once
        for sink in self.sinks:
            drops: SinkDrops | None
            try:
                drops = sink.consume(batch)
            except Exception:
                log.exception("sink %s failed on a batch of %d events", sink.name, n)
                self.metrics.sink_errors.labels(sink.name).inc()
                drops = dict.fromkeys(range(n), "error")
            if drops:
                self._count_drops(sink.name, drops, lost)
        done = n - len(lost)
        self.processed += done
        self.sink_dropped += len(lost)
        self.metrics.processed.inc(done)

    def _count_drops(self, sink: str, drops: SinkDrops, lost: set[int]) -> None:
        by_reason: dict[str, int] = {}
        for position, reason in drops.items():
            if position not in lost:
                lost.add(position)
                by_reason[reason] = by_reason.get(reason, 0) + 1
        for reason, count in by_reason.items():
            self.metrics.sink_dropped.labels(sink, reason).inc(count)

    def maintain(self, now: float) -> None:
        if self._slicing:
            # Between the slices of one batch, maintenance waits for the batch's end: the sweeps
            # judge open runs against the clock, and a run started in one slice and ended in a later
            # one of the same request must not be seen abandoned (nor was it before slicing).
            self._deferred = now
            return
        for sink in self.sinks:
            try:
                sink.maintain(now)
            except Exception:
                log.exception("sink %s failed in maintenance", sink.name)
                self.metrics.sink_errors.labels(sink.name).inc()

    async def close(self) -> None:
        """Process everything already queued, then stop `run`. Call after intake has stopped."""
        self._closing = True
        await self._queue.put(_STOP)


def _slices(batch: Batch, size: int) -> list[Batch]:
    numbered = batch.label_sets  # the decoder's label-set numbers, if it made them: sliced along
    return [
        Batch(
            batch.events[i : i + size], batch.raws[i : i + size], batch.received_at, batch.transport,
            None if numbered is None else numbered.owner.numbered(numbered.numbers[i : i + size]),
        )
        for i in range(0, len(batch.events), size)
    ]
