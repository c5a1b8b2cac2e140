"""The one consumer: batches in from a bounded queue, fanned out to every sink in order."""

from __future__ import annotations

import asyncio
import logging

from sidecar.selfmetrics import SelfMetrics
from sidecar.types import Batch, Sink

log = logging.getLogger("agent_sidecar.pipeline")

_STOP = None


class Pipeline:
    """Listeners `submit` batches; the `run` task hands each to every sink.

    Only the run task touches sink state, so sinks need no locks against each
    other. A sink that raises is logged and counted; the others still get the batch.
    """

    def __init__(self, sinks: list[Sink], metrics: SelfMetrics, queue_size: int):
        self.sinks = sinks
        self.metrics = metrics
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(queue_size)
        metrics.queue_depth.set_function(self._queue.qsize)
        self.processed = 0
        self._closing = False

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
            self.process(batch)

    def process(self, batch: Batch) -> None:
        for sink in self.sinks:
            try:
                sink.consume(batch)
            except Exception:
                log.exception("sink %s failed on a batch of %d events", sink.name, len(batch.events))
                self.metrics.sink_errors.labels(sink.name).inc()
        self.processed += len(batch.events)
        self.metrics.processed.inc(len(batch.events))

    def maintain(self, now: float) -> None:
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
