"""GET /metrics: the Prometheus exposition of the registry (both formats, prometheus_client's negotiation).

prometheus_client renders the registry (self-metrics, process collector, the window and tail
collectors); the agent_* sink, the bulk of the page at the cap, appends its own exposition of
the same families (sidecar.sinks.exposition). The body is gzipped when the scraper accepts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from isal import isal_zlib
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.auth import check_bearer, unauthorized
from sidecar.selfmetrics import SelfMetrics
from sidecar.sinks.exposition import exposed_separately

# ISA-L's level 1 (its levels run 0-3), measured on the 21.8 MB OpenMetrics page at the cap
# (bench/scrape.py, BENCHMARKS.md): 11.4x in 9-11 ms, where zlib's level 1 took 52-108 ms for 10.3x.
# Level 0 is 8% faster but 38% larger; 2 is no smaller; 3 costs 3.5x the CPU for nothing.
GZIP_LEVEL = 1
_EOF = b"# EOF\n"
_OPENMETRICS = "application/openmetrics-text"


class Exposes(Protocol):
    def expose(self, openmetrics: bool) -> str: ...


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (named or `*`, with a q other than 0)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def render(registry: CollectorRegistry, accept: str, sink: Exposes | None) -> tuple[bytes, str]:
    """The page and its content type: prometheus_client's encoder over the registry, with the
    sink's families appended before OpenMetrics' one `# EOF`."""
    encoder, content_type = choose_encoder(accept)
    if sink is None:
        return encoder(registry), content_type
    token = exposed_separately.set(True)
    try:
        rest = encoder(registry)
    finally:
        exposed_separately.reset(token)
    openmetrics = content_type.startswith(_OPENMETRICS)
    fast = sink.expose(openmetrics).encode("utf-8")
    if openmetrics and rest.endswith(_EOF):
        return b"".join((rest[: -len(_EOF)], fast, _EOF)), content_type
    return rest + fast, content_type


def metrics_route(
    registry: CollectorRegistry, metrics: SelfMetrics, token: Callable[[], str | None], sink: Exposes | None = None
) -> Route:
    def respond(accept: str, gzip: bool) -> tuple[bytes, str]:
        body, content_type = render(registry, accept, sink)
        # ISA-L releases the GIL while it compresses: ingest runs beside it. wbits=31: a gzip member.
        return (isal_zlib.compress(body, GZIP_LEVEL, wbits=31) if gzip else body), content_type

    async def get_metrics(request: Request) -> Response:
        if not check_bearer(request, token()):
            return unauthorized()
        gzip = accepts_gzip(request.headers.get("accept-encoding", ""))
        started = time.perf_counter()
        # Rendering runs in a worker thread so a large registry never stalls ingest;
        # collectors copy their state under a lock held only between batches.
        body, content_type = await run_in_threadpool(respond, request.headers.get("accept", ""), gzip)
        metrics.scrape_duration.observe(time.perf_counter() - started)
        headers = {"Vary": "Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=content_type, headers=headers)

    return Route("/metrics", get_metrics, methods=["GET"])
