"""GET /v1/insights: findings from the insights store (see README, "Insights"), and the
agent_insights gauge of the findings active with the default window and baseline.

The rules run in a worker thread on a copy of the store: the event loop (and ingest) waits
only for the copy, taken under the store's lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.auth import check_bearer, unauthorized
from sidecar.config import InsightsConfig, format_duration, parse_duration
from sidecar.insights import KINDS, SEVERITIES, Result, find
from sidecar.sinks.insights import InsightsStore

PARAMETERS = ("window", "baseline")


class BadQuery(ValueError):
    """A query parameter the API does not accept; the message names it."""


def parse_seconds(name: str, text: str) -> float:
    # ASCII only: "１５m" or "²" would pass str.isdigit() and then fail or mean something else
    if not text.isascii():
        raise BadQuery(f"{name} must be a duration such as 15m, 1h or 900 (ASCII), not {text!r}")
    try:
        return parse_duration(float(text) if text.replace(".", "", 1).isdigit() else text)
    except ValueError:
        raise BadQuery(f"{name} must be a duration such as 15m, 1h or 900, not {text!r}") from None


def parse_query(params: dict[str, str], config: InsightsConfig) -> tuple[float, float]:
    """(window, baseline) in seconds, whole buckets, or BadQuery naming what is wrong."""
    for name in params:
        if name not in PARAMETERS:
            raise BadQuery(f"unknown parameter {name!r} (expected one of: {', '.join(PARAMETERS)})")
    window = parse_seconds("window", params["window"]) if "window" in params else config.window
    baseline = parse_seconds("baseline", params["baseline"]) if "baseline" in params else config.baseline
    width = config.bucket
    window, baseline = round(window / width) * width, round(baseline / width) * width  # whole buckets
    if window < width:
        raise BadQuery(f"window must be at least insights.bucket ({format_duration(width)})")
    if baseline <= window:
        raise BadQuery(f"baseline ({format_duration(baseline)}) must be longer than window ({format_duration(window)})")
    if baseline > config.retention:
        raise BadQuery(f"baseline must be at most insights.retention ({format_duration(config.retention)})")
    return window, baseline


def compute(store: InsightsStore, window: float, baseline: float) -> tuple[Result, float, bool]:
    """The findings (and as_of, exact): run in a worker thread."""
    snap = store.snapshot(window, baseline)
    return find(snap, store.config), snap.as_of, snap.exact


def as_of_text(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def document(result: Result, window: float, baseline: float, as_of: float, exact: bool) -> dict[str, Any]:
    return {
        "window": format_duration(window),
        "baseline": format_duration(baseline),
        "as_of": as_of_text(as_of),
        "exact": exact,
        "findings": [f.doc() for f in result.findings],
        "checked": result.checked,
    }


def insights_route(store: InsightsStore, token: Callable[[], str | None]) -> Route:
    async def get_insights(request: Request) -> Response:
        if not check_bearer(request, token()):  # read per request: a reload may change it
            return unauthorized()
        try:
            window, baseline = parse_query(dict(request.query_params), store.config)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        result, as_of, exact = await asyncio.to_thread(compute, store, window, baseline)
        return JSONResponse(document(result, window, baseline, as_of, exact))

    return Route("/v1/insights", get_insights, methods=["GET"])


class InsightsGauge:
    """agent_insights{kind,severity}: findings active with the default window and baseline,
    recomputed at a scrape at most every insights.cache seconds (scrapes run in a worker thread)."""

    def __init__(self, store: InsightsStore, registry: CollectorRegistry | None, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._at = -float("inf")
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:
        return []

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            if self.clock() - self._at >= self.store.config.cache:
                config = self.store.config
                result, _, _ = compute(self.store, config.window, config.baseline)
                counts = {(k, s): 0 for k in KINDS for s in SEVERITIES}
                for f in result.findings:
                    counts[(f.kind, f.severity)] += 1
                self._counts, self._at = counts, self.clock()
            return self._counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "agent_insights", "Findings of /v1/insights active now (default window and baseline), by kind and severity.",
            labels=["kind", "severity"],
        )
        for (kind, severity), n in sorted(self.counts().items()):
            family.add_metric([kind, severity], n)
        yield family
