"""GET /v1/series: per-step events, errors, tokens, cost and exact p50/p95/p99 over a window, from
the insights store's buckets, with the filters of /v1/stats (see README, "Insights").

The page opens its charts with this history instead of filling them only while the tab is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.api.insights import BadQuery, as_of_text, parse_seconds
from sidecar.auth import check_bearer, unauthorized
from sidecar.config import format_duration
from sidecar.insights import nearest_rank_values
from sidecar.sinks.insights import COST, ERRORS, EVENTS, TOKENS, InsightsStore, Subject

DIMENSIONS = ("agent", "workflow", "type", "model")
PARAMETERS = ("window", "step", *DIMENSIONS)
MAX_POINTS = 1440
_INDEX = {"type": 0, "agent": 1, "workflow": 2, "model": 3}


def parse_query(params: dict[str, str], store: InsightsStore) -> tuple[float, float, dict[str, str]]:
    """(window, step, filters), whole buckets, or BadQuery naming what is wrong."""
    for name in params:
        if name not in PARAMETERS:
            raise BadQuery(f"unknown parameter {name!r} (expected one of: {', '.join(PARAMETERS)})")
    width = store.width
    window = parse_seconds("window", params["window"]) if "window" in params else store.config.window
    step = parse_seconds("step", params["step"]) if "step" in params else width
    if step < width or abs(step / width - round(step / width)) > 1e-9:
        raise BadQuery(f"step must be a whole multiple of insights.bucket ({format_duration(width)}), not {params.get('step')!r}")
    if window > store.config.retention:
        raise BadQuery(f"window must be at most insights.retention ({format_duration(store.config.retention)})")
    if window < step or window / step > MAX_POINTS:
        raise BadQuery(f"window / step must be between 1 and {MAX_POINTS} points")
    window = round(window / step) * step
    return window, step, {d: params[d] for d in DIMENSIONS if d in params}


def compute(store: InsightsStore, window: float, step: float, filters: dict[str, str]) -> dict[str, Any]:
    """The /v1/series document (run in a worker thread: the store's lock is held only for the copy)."""
    now, buckets = store.series(window)
    wanted = [(_INDEX[d], v) for d, v in filters.items()]

    def matches(subject: Subject) -> bool:
        return all(subject[i] == v for i, v in wanted)

    first = (np.floor(now / step) + 1) * step - window  # steps end at the step holding now
    n = round(window / step)
    sums = np.zeros((n, 4))
    chunks: list[list[np.ndarray]] = [[] for _ in range(n)]
    for start, bucket in buckets:
        k = int((start - first) // step)
        if not 0 <= k < n:
            continue
        keys, table = bucket.rows()
        chosen = np.fromiter((matches(subject) for subject in keys), dtype=bool, count=len(keys))
        sums[k] += table[chosen][:, [EVENTS, ERRORS, TOKENS, COST]].sum(axis=0)
        chunks[k] += [np.asarray(v, dtype=np.float64) for subject, v in bucket.durations.items() if matches(subject)]
    points = []
    for k in range(n):
        values = np.concatenate(chunks[k]) if chunks[k] else np.empty(0)
        p50, p95, p99 = nearest_rank_values(values, (50, 95, 99))
        points.append({
            "t": float(first + k * step), "events": int(sums[k, 0]), "errors": int(sums[k, 1]), "tokens": int(sums[k, 2]),
            "cost_usd": float(sums[k, 3]), "duration_ms": {"count": len(values), "p50": p50, "p95": p95, "p99": p99},
        })
    return {"window": format_duration(window), "step": format_duration(step), "as_of": as_of_text(now), "filters": filters, "points": points}


def series_route(store: InsightsStore, token: Callable[[], str | None]) -> Route:
    async def get_series(request: Request) -> Response:
        if not check_bearer(request, token()):  # read per request: a reload may change it
            return unauthorized()
        try:
            window, step, filters = parse_query(dict(request.query_params), store)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(await asyncio.to_thread(compute, store, window, step, filters))

    return Route("/v1/series", get_series, methods=["GET"])
