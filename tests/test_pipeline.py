import asyncio

from prometheus_client import CollectorRegistry

from sidecar.pipeline import SLICE_EVENTS, Pipeline
from sidecar.selfmetrics import SelfMetrics
from sidecar.sinks.labelsets import LabelSets
from sidecar.types import Batch, Event


class Recorder:
    name = "recorder"

    def __init__(self):
        self.batches, self.maintained = [], []

    def consume(self, batch):
        self.batches.append(batch)

    def maintain(self, now):
        self.maintained.append(now)


class Broken:
    name = "broken"

    def consume(self, batch):
        raise RuntimeError("bug in a sink")

    def maintain(self, now):
        raise RuntimeError("bug in maintenance")


def batch(n=1):
    return Batch([Event(type="x", timestamp=1.0, severity="info", success=True)] * n, [b"{}"] * n, 1.0, "test")


async def test_a_failing_sink_is_counted_and_the_others_still_get_every_batch(caplog):
    registry = CollectorRegistry()
    rec = Recorder()
    pipeline = Pipeline([Broken(), rec], SelfMetrics(registry), queue_size=4)
    task = asyncio.create_task(pipeline.run())
    await pipeline.submit(batch(3))
    assert pipeline.try_submit(batch(2))
    pipeline.maintain(5.0)
    await pipeline.close()
    await task
    assert [len(b.events) for b in rec.batches] == [3, 2] and rec.maintained == [5.0]
    assert registry.get_sample_value("sidecar_sink_errors_total", {"sink": "broken"}) == 3
    # a batch a sink raised on was not processed: counted as that sink's drops instead
    assert registry.get_sample_value("sidecar_events_processed_total") == 0 == pipeline.processed
    assert registry.get_sample_value("sidecar_sink_events_dropped_total", {"sink": "broken", "reason": "error"}) == 5
    assert pipeline.sink_dropped == 5
    assert "sink broken failed" in caplog.text


class Picky:
    """Leaves out the events at the given positions of every batch, as a sink isolating a bad event does."""

    def __init__(self, name, drops):
        self.name, self.drops, self.batches = name, drops, []

    def consume(self, batch):
        self.batches.append(batch)
        return dict(self.drops)

    def maintain(self, now):
        pass


async def test_events_a_sink_leaves_out_are_counted_once_and_not_as_processed():
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    first = Picky("first", {0: "splice_failed"})
    second = Picky("second", {0: "other", 2: "other"})
    rec = Recorder()
    pipeline = Pipeline([first, second, rec], metrics, queue_size=4)
    task = asyncio.create_task(pipeline.run())
    metrics.count("test", accepted=8, rejections=[])
    await pipeline.submit(batch(5))
    await pipeline.submit(batch(3))
    await pipeline.close()
    await task
    assert [len(b.events) for b in rec.batches] == [5, 3]  # every sink still got every event
    sample = registry.get_sample_value
    # position 0 of each batch: dropped by both, counted once, against the first sink
    assert sample("sidecar_sink_events_dropped_total", {"sink": "first", "reason": "splice_failed"}) == 2
    assert sample("sidecar_sink_events_dropped_total", {"sink": "second", "reason": "other"}) == 2
    assert sample("sidecar_events_processed_total") == 4 == pipeline.processed
    totals = metrics.totals()
    assert totals["sink_dropped"] == 4 == pipeline.sink_dropped
    assert totals["accepted"] == totals["processed"] + totals["sink_dropped"]  # conservation, exactly


async def test_try_submit_refuses_when_full_or_closing():
    pipeline = Pipeline([Recorder()], SelfMetrics(CollectorRegistry()), queue_size=1)
    assert pipeline.try_submit(batch())
    assert not pipeline.try_submit(batch())  # full
    task = asyncio.create_task(pipeline.run())
    await pipeline.close()
    await task
    assert not pipeline.try_submit(batch())  # closing: HTTP answers 503
    assert pipeline.processed == 1


async def test_a_long_batch_reaches_the_sinks_in_slices_with_the_loop_turning_between_them():
    """One OTLP request can hold tens of thousands of spans: the sinks take them a slice at a time,
    so a listener, a scrape or the tail gets the loop between slices, not after the whole batch."""
    timeline: list[object] = []

    class Timed(Recorder):
        def consume(self, batch):
            super().consume(batch)
            timeline.append(len(batch.events))

    rec = Timed()
    pipeline = Pipeline([rec], SelfMetrics(CollectorRegistry()), queue_size=4)
    n = 2 * SLICE_EVENTS + 5
    events = [Event(type="x", timestamp=float(i), severity="info", success=True) for i in range(n)]
    label_sets = LabelSets()
    await pipeline.submit(Batch(events, [b"%d" % i for i in range(n)], 1.0, "test", label_sets.numbered(list(range(n)))))
    await pipeline.close()
    running = asyncio.create_task(pipeline.run())
    while not running.done():
        timeline.append("turn")
        await asyncio.sleep(0)
    assert [t for t in timeline if t != "turn"] == [SLICE_EVENTS, SLICE_EVENTS, 5]
    slices = [i for i, t in enumerate(timeline) if t != "turn"]
    assert all("turn" in timeline[a:b] for a, b in zip(slices, slices[1:]))  # the loop ran between slices
    assert [e for b in rec.batches for e in b.events] == events  # every event, in order, once
    assert [r for b in rec.batches for r in b.raws] == [b"%d" % i for i in range(n)]
    assert [x for b in rec.batches for x in b.label_sets.numbers] == list(range(n))  # the decoder's numbers, sliced along
    assert all(b.label_sets.owner is label_sets for b in rec.batches)
    assert pipeline.processed == n


async def test_drops_in_a_sliced_batch_are_counted_per_event():
    registry = CollectorRegistry()
    picky = Picky("picky", {0: "other"})  # the first event of every slice it is handed
    pipeline = Pipeline([picky], SelfMetrics(registry), queue_size=4)
    await pipeline.submit(batch(SLICE_EVENTS + 1))
    await pipeline.close()
    await pipeline.run()
    assert len(picky.batches) == 2
    assert pipeline.processed == SLICE_EVENTS - 1 and pipeline.sink_dropped == 2
    assert registry.get_sample_value("sidecar_sink_events_dropped_total", {"sink": "picky", "reason": "other"}) == 2


async def test_maintenance_waits_for_the_end_of_a_sliced_batch():
    """A run's start and end in one long request: the abandon sweep must not run between them."""
    timeline: list[object] = []

    class Sweeper(Recorder):
        def consume(self, batch):
            timeline.append(len(batch.events))

        def maintain(self, now):
            timeline.append(("maintain", now))

    pipeline = Pipeline([Sweeper()], SelfMetrics(CollectorRegistry()), queue_size=4)
    await pipeline.submit(batch(2 * SLICE_EVENTS + 1))
    await pipeline.close()
    running = asyncio.create_task(pipeline.run())
    ticks = 0.0
    while not running.done():
        ticks += 1.0
        pipeline.maintain(ticks)  # as the once-a-second task would, at every loop turn
        await asyncio.sleep(0)
    slices = [i for i, t in enumerate(timeline) if isinstance(t, int)]
    assert len(slices) == 3
    assert not any(isinstance(t, tuple) for t in timeline[slices[0] : slices[-1]])  # none between the slices
    after = timeline[slices[-1] + 1 :]
    assert after and after[0][0] == "maintain"  # the one that waited ran at the batch's end
    pipeline.maintain(99.0)
    assert timeline[-1] == ("maintain", 99.0)  # and maintenance runs at once again
