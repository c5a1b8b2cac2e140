"""GET /metrics: the Prometheus exposition of the registry (both formats, prometheus_client's negotiation)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.auth import check_bearer, unauthorized
from sidecar.selfmetrics import SelfMetrics


def metrics_route(registry: CollectorRegistry, metrics: SelfMetrics, token: Callable[[], str | None]) -> Route:
    async def get_metrics(request: Request) -> Response:
        if not check_bearer(request, token()):
            return unauthorized()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        started = time.perf_counter()
        # Rendering runs in a worker thread so a large registry never stalls ingest;
        # collectors copy their state under a lock held only between batches.
        body = await run_in_threadpool(encoder, registry)
        metrics.scrape_duration.observe(time.perf_counter() - started)
        return Response(body, media_type=content_type)

    return Route("/metrics", get_metrics, methods=["GET"])
