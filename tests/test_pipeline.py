import asyncio

from prometheus_client import CollectorRegistry

from sidecar.pipeline import Pipeline
from sidecar.selfmetrics import SelfMetrics
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
    assert registry.get_sample_value("sidecar_events_processed_total") == 5
    assert "sink broken failed" in caplog.text


async def test_try_submit_refuses_when_full_or_closing():
    pipeline = Pipeline([Recorder()], SelfMetrics(CollectorRegistry()), queue_size=1)
    assert pipeline.try_submit(batch())
    assert not pipeline.try_submit(batch())  # full
    task = asyncio.create_task(pipeline.run())
    await pipeline.close()
    await task
    assert not pipeline.try_submit(batch())  # closing: HTTP answers 503
    assert pipeline.processed == 1
