"""The Starlette app factory and the lifespan that owns every task.

    listeners (unix, http) -> EventDecoder -> Pipeline -> sinks (metrics, window, tail)
    routes that read the sinks: sidecar/api/ (one module per path)

`build_app(config)` wires the parts; nothing here is global, so tests build as
many independent sidecars as they like, each with its own registry and clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from sidecar import __version__
from sidecar.api.health import health_routes
from sidecar.api.insights import InsightsGauge, insights_route
from sidecar.api.metrics import metrics_route
from sidecar.api.page import page_routes
from sidecar.api.reload import reload_route
from sidecar.api.series import series_route
from sidecar.api.stats import stats_route
from sidecar.api.tail import tail_route
from sidecar.config import Config
from sidecar.ingest.http import events_route
from sidecar.ingest.otlp import OtlpReceiver
from sidecar.ingest.unix import UnixListener
from sidecar.live import LiveConfig
from sidecar.pipeline import Pipeline
from sidecar.pricing import Pricer
from sidecar.protocol import EventDecoder
from sidecar.reload import Reloader
from sidecar.selfmetrics import SelfMetrics
from sidecar.sinks.insights import InsightsStore
from sidecar.sinks.labelsets import LabelSets
from sidecar.sinks.metrics import MetricsSink
from sidecar.sinks.tail import TailHub
from sidecar.sinks.window import WindowSink
from sidecar.sinks.window.autosave import WindowAutosave
from sidecar.types import Sink

log = logging.getLogger("agent_sidecar")

MAINTAIN_INTERVAL = 1.0


@dataclass
class Sinks:
    """Every sink, typed, so routes get the concrete object they read."""

    metrics: MetricsSink
    window: WindowSink
    tail: TailHub
    insights: InsightsStore

    def in_order(self) -> list[Sink]:
        """The order the pipeline feeds them. A new sink is one field here and one line below."""
        return [self.metrics, self.window, self.insights, self.tail]


@dataclass
class Sidecar:
    """Everything one running sidecar owns, reachable from routes as `request.app.state.sidecar`."""

    live: LiveConfig
    clock: Callable[[], float]
    registry: CollectorRegistry
    metrics: SelfMetrics
    decoder: EventDecoder
    pipeline: Pipeline
    sinks: Sinks
    reloader: Reloader
    listeners: list[UnixListener] = field(default_factory=list)
    otlp: OtlpReceiver | None = None
    autosave: WindowAutosave | None = None  # windows.snapshot_path set
    http_url: str | None = None
    ready: bool = False

    @property
    def config(self) -> Config:
        """The config in force now (a reload may have swapped it since start)."""
        return self.live.current

    def listener_names(self) -> list[str]:
        names = [self.http_url] if self.http_url else []
        return names + [f"unix:{lst.path}" for lst in self.listeners]


def build_sinks(config: Config, registry: CollectorRegistry, clock: Callable[[], float], label_sets: LabelSets | None = None) -> Sinks:
    """`label_sets`: the numbering the decoder gives batches; each batch's events are numbered once
    for all three sinks that read numbers (sinks/labelsets.py)."""
    label_sets = label_sets if label_sets is not None else LabelSets()
    return Sinks(
        metrics=MetricsSink(config.metrics, config.lifecycle, registry, label_sets),
        window=WindowSink(config.windows, registry, clock, label_sets),
        tail=TailHub(config.tail, registry),
        insights=InsightsStore(config.insights, clock, config.lifecycle.abandon_after, label_sets),
    )


def build_app(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    http_url: str | None = None,
    reload_from: Callable[[], Config] | None = None,
) -> Starlette:
    """`reload_from` gives the config a reload applies (run: the --config file and the flags)."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = SelfMetrics(registry)
    label_sets = LabelSets()
    sinks = build_sinks(config, registry, clock, label_sets)
    InsightsGauge(sinks.insights, registry)
    pipeline = Pipeline(sinks.in_order(), metrics, config.ingest.queue_size)
    pricer = Pricer(config.pricing, registry)
    decoder = EventDecoder(config.ingest.max_clock_skew, pricer, label_sets)
    live = LiveConfig(config)
    reloader = Reloader(live, reload_from, registry, clock)
    sidecar = Sidecar(live, clock, registry, metrics, decoder, pipeline, sinks, reloader, http_url=http_url)
    if config.listen.unix:
        sidecar.listeners.append(
            UnixListener(config.listen.unix, config.listen.unix_mode, config.ingest, decoder, pipeline, metrics, clock)
        )
    if config.otlp.enabled:
        sidecar.otlp = OtlpReceiver(config, decoder, pipeline, metrics, registry, clock, pricer)
    if config.windows.snapshot_path:
        sidecar.autosave = WindowAutosave(sinks.window, config.windows, registry, clock)
    live.on_change(lambda new: _apply(sidecar, new))
    app = Starlette(routes=build_routes(sidecar), lifespan=_lifespan)
    app.state.sidecar = sidecar
    return app


def _apply(sidecar: Sidecar, config: Config) -> None:
    """Hand a reloaded config to the parts that keep values of their own (routes read `live`)."""
    sidecar.sinks.metrics.reconfigure(config.metrics, config.lifecycle)
    sidecar.sinks.tail.reconfigure(config.tail)
    sidecar.sinks.insights.abandon_after = config.lifecycle.abandon_after  # from its next sweep, as the metrics sink
    sidecar.decoder.max_clock_skew = config.ingest.max_clock_skew
    for listener in sidecar.listeners:
        listener.config = config.ingest  # read per connection and per check, never kept
    if sidecar.otlp is not None:
        sidecar.otlp.config = config  # its token and body limit are read per request; otlp.* is kept


def build_routes(sidecar: Sidecar) -> list[BaseRoute]:
    """Routes get `live` (or one of its readers), never a value: a reload reaches the next request."""
    live = sidecar.live
    token = live.token
    return [
        events_route(live, sidecar.decoder, sidecar.pipeline, sidecar.metrics, sidecar.clock),
        *(sidecar.otlp.routes() if sidecar.otlp else []),
        stats_route(sidecar.sinks.window, token),
        insights_route(sidecar.sinks.insights, token),
        series_route(sidecar.sinks.insights, token),
        metrics_route(sidecar.registry, sidecar.metrics, token, sidecar.sinks.metrics),
        *health_routes(lambda: sidecar.ready, sidecar.listener_names),
        *page_routes(lambda: live.current.web),
        tail_route(sidecar.sinks.tail, live),
        reload_route(sidecar.reloader, token),
    ]


async def _maintain(sidecar: Sidecar) -> None:
    while True:
        await asyncio.sleep(MAINTAIN_INTERVAL)
        sidecar.pipeline.maintain(sidecar.clock())


async def _drain(pipeline: Pipeline, task: asyncio.Task[None]) -> None:
    await pipeline.close()
    await task


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    sidecar: Sidecar = app.state.sidecar
    sidecar.metrics.watch_loop(asyncio.get_running_loop())
    pipeline_task = asyncio.create_task(sidecar.pipeline.run(), name="pipeline")
    maintain_task = asyncio.create_task(_maintain(sidecar), name="maintain")
    for sink in sidecar.pipeline.sinks:
        await sink.start()
    autosave_task = None
    try:
        if sidecar.autosave is not None:  # the windows as they were, before any new event
            await sidecar.autosave.load()
            autosave_task = asyncio.create_task(sidecar.autosave.run(), name="window-autosave")
        for listener in sidecar.listeners:
            await listener.start()
        sidecar.ready = True
        where = [f"http={sidecar.http_url}"] if sidecar.http_url else []
        where += [f"unix={lst.path}" for lst in sidecar.listeners]
        log.info("agent-sidecar %s ready %s", __version__, " ".join(where))
        yield
    finally:
        sidecar.ready = False
        grace = sidecar.config.shutdown_grace
        for listener in sidecar.listeners:
            await listener.stop()  # stop intake first ...
        if sidecar.otlp is not None:  # ... hand on the spans still waiting for an ancestor ...
            sidecar.otlp.flush(float("inf"))
            sidecar.otlp.close()
        if not pipeline_task.done():  # ... then process everything accepted
            try:
                await asyncio.wait_for(_drain(sidecar.pipeline, pipeline_task), grace)
            except TimeoutError:
                log.error("pipeline did not drain within shutdown_grace (%gs)", grace)
        maintain_task.cancel()
        if sidecar.autosave is not None and autosave_task is not None:  # every accepted event is in the windows now
            await sidecar.autosave.stop(autosave_task)
        for sink in sidecar.pipeline.sinks:
            await sink.close()
        totals = sidecar.metrics.totals()
        log.info(
            "agent-sidecar stopped: received=%d accepted=%d rejected=%d dropped=%d processed=%d sink_dropped=%d",
            totals["received"], totals["accepted"], totals["rejected"], totals["dropped"], sidecar.pipeline.processed,
            sidecar.pipeline.sink_dropped,
        )
