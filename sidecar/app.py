"""The Starlette app factory and the lifespan that owns every task.

    listeners (unix, http) -> EventDecoder -> Pipeline -> sinks (metrics, ...)

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
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from sidecar import __version__
from sidecar.config import Config
from sidecar.auth import check_bearer, unauthorized
from sidecar.ingest.http import events_route
from sidecar.ingest.unix import UnixListener
from sidecar.page import page_routes
from sidecar.pipeline import Pipeline
from sidecar.protocol import EventDecoder
from sidecar.selfmetrics import SelfMetrics
from sidecar.sinks.metrics import MetricsSink
from sidecar.sinks.tail import TailHub
from sidecar.sinks.window import WindowSink
from sidecar.stats import stats_route
from sidecar.tail_route import tail_route
from sidecar.types import Sink

log = logging.getLogger("agent_sidecar")

MAINTAIN_INTERVAL = 1.0


@dataclass
class Sidecar:
    """Everything one running sidecar owns, reachable from routes as `request.app.state.sidecar`."""

    config: Config
    clock: Callable[[], float]
    registry: CollectorRegistry
    metrics: SelfMetrics
    decoder: EventDecoder
    pipeline: Pipeline
    sinks: dict[str, Sink]
    listeners: list[UnixListener] = field(default_factory=list)
    http_url: str | None = None
    ready: bool = False


def build_sinks(config: Config, registry: CollectorRegistry, clock: Callable[[], float]) -> list[Sink]:
    """Every sink, in the order the pipeline feeds them. A new sink is one line here."""
    return [
        MetricsSink(config.metrics, config.lifecycle, registry),
        WindowSink(config.windows, registry, clock),
        TailHub(config.tail, registry),
    ]


def build_app(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    http_url: str | None = None,
) -> Starlette:
    registry = registry if registry is not None else CollectorRegistry()
    metrics = SelfMetrics(registry)
    sinks = build_sinks(config, registry, clock)
    pipeline = Pipeline(sinks, metrics, config.ingest.queue_size)
    decoder = EventDecoder(config.ingest.max_clock_skew)
    sidecar = Sidecar(config, clock, registry, metrics, decoder, pipeline, {s.name: s for s in sinks}, http_url=http_url)
    if config.listen.unix:
        sidecar.listeners.append(
            UnixListener(config.listen.unix, config.listen.unix_mode, config.ingest, decoder, pipeline, metrics, clock)
        )
    app = Starlette(routes=build_routes(sidecar), lifespan=_lifespan)
    app.state.sidecar = sidecar
    return app


def build_routes(sidecar: Sidecar) -> list[BaseRoute]:
    config = sidecar.config
    return [
        events_route(config.ingest, config.auth.token, sidecar.decoder, sidecar.pipeline, sidecar.metrics, sidecar.clock),
        stats_route(sidecar.sinks["window"], config.auth.token),
        Route("/metrics", _metrics),
        Route("/healthz", _healthz),
        Route("/readyz", _readyz),
        *page_routes(config.web),
        tail_route(sidecar.sinks["tail"], config.tail, config.auth.token),
    ]


async def _metrics(request: Request) -> Response:
    sidecar: Sidecar = request.app.state.sidecar
    if not check_bearer(request, sidecar.config.auth.token):
        return unauthorized()
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    started = time.perf_counter()
    # Rendering runs in a worker thread so a large registry never stalls ingest;
    # collectors copy their state under a lock held only between batches.
    body = await run_in_threadpool(encoder, sidecar.registry)
    sidecar.metrics.scrape_duration.observe(time.perf_counter() - started)
    return Response(body, media_type=content_type)


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def _readyz(request: Request) -> Response:
    sidecar: Sidecar = request.app.state.sidecar
    body = {"ready": sidecar.ready, "listeners": [f"unix:{lst.path}" for lst in sidecar.listeners]}
    return JSONResponse(body, status_code=200 if sidecar.ready else 503)


async def _maintain(sidecar: Sidecar) -> None:
    while True:
        await asyncio.sleep(MAINTAIN_INTERVAL)
        sidecar.pipeline.maintain(sidecar.clock())


async def _drain(pipeline: Pipeline, task: asyncio.Task) -> None:
    await pipeline.close()
    await task


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    sidecar: Sidecar = app.state.sidecar
    sidecar.metrics.watch_loop(asyncio.get_running_loop())
    pipeline_task = asyncio.create_task(sidecar.pipeline.run(), name="pipeline")
    maintain_task = asyncio.create_task(_maintain(sidecar), name="maintain")
    for sink in sidecar.sinks.values():
        if hasattr(sink, "start"):
            await sink.start()
    try:
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
        if not pipeline_task.done():  # ... then process everything accepted
            try:
                await asyncio.wait_for(_drain(sidecar.pipeline, pipeline_task), grace)
            except TimeoutError:
                log.error("pipeline did not drain within shutdown_grace (%gs)", grace)
        maintain_task.cancel()
        for sink in sidecar.sinks.values():
            if hasattr(sink, "close"):
                await sink.close()
        totals = sidecar.metrics.totals()
        log.info(
            "agent-sidecar stopped: received=%d accepted=%d rejected=%d dropped=%d processed=%d",
            totals["received"], totals["accepted"], totals["rejected"], totals["dropped"], sidecar.pipeline.processed,
        )
