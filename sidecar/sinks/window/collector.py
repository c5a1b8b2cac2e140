"""The window gauges for Prometheus, built at scrape time from a `Snapshot` (no state changes)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from sidecar.sinks.window.sorted_values import PERCENTILES, Floats, at_ranks, ranks_of
from sidecar.sinks.window.view import Int32s, Snapshot, UInt16s, sampled


class Quantiles(Metric):
    """A summary family holding only quantile samples (add_metric like GaugeMetricFamily's)."""

    def __init__(self, name: str, documentation: str, labels: list[str]):
        super().__init__(name, documentation, "summary")
        self._labelnames = labels

    def add_metric(self, labels: list[str], value: float) -> None:
        self.add_sample(self.name, dict(zip(self._labelnames, labels)), value)


def collect(snap: Snapshot, by_dims: Sequence[str], by_limit: int) -> Iterator[Metric]:
    """The window families from a snapshot (with rows when by_dims is set)."""
    blank = [""] * len(by_dims)
    # Typed "summary" (quantiles over a sliding window are what a Prometheus summary is), so
    # tools accept the `quantile` label; no _count/_sum, as a window's count goes down.
    quantiles = Quantiles(
        "agent_window_duration_seconds",
        "Exact nearest-rank quantile of event durations over the sliding window (NaN when empty)."
        + (f" Series with {'/'.join(by_dims)} set cover one value; empty ones the whole window." if by_dims else ""),
        labels=["window", "quantile", *by_dims],
    )
    events = GaugeMetricFamily("agent_window_events", "Events whose timestamp is inside the sliding window.", labels=["window", *by_dims])
    samples = GaugeMetricFamily(
        "sidecar_window_samples", "Duration samples held for the window's quantiles (fewer than events past windows.max_samples).", labels=["window"]
    )
    for w in snap.windows:
        assert w.values is not None
        n = len(w.values)
        values = w.values.select(ranks_of(n)).tolist() if n else [math.nan] * (len(PERCENTILES) + 2)
        for p, v in zip(PERCENTILES, values[1:-1]):
            quantiles.add_metric([w.name, str(p / 100), *blank], v / 1000.0)
        events.add_metric([w.name, *blank], float(w.per_key("events").sum()))
        samples.add_metric([w.name], n)
        if not by_dims or w.rows is None:
            continue
        # Per-value quantiles need a pass over the window's rows.
        keep = sampled(w.rows.ts, w.rows.dur, w.rows.level)
        key, dur, per_key_events = w.rows.key[keep], w.rows.dur[keep], w.per_key("events")
        for i, dim in enumerate(by_dims):
            names = snap.keys.names[dim]
            of = snap.keys.of[dim]
            for name, count, qs in _top_groups(key, dur, of, names, snap.keys.n_names[dim], per_key_events, by_limit):
                labels = blank[:i] + [name] + blank[i + 1 :]
                events.add_metric([w.name, *labels], count)
                for p, v in zip(PERCENTILES, qs):
                    quantiles.add_metric([w.name, str(p / 100), *labels], v / 1000.0)
    yield quantiles
    yield events
    yield samples
    yield CounterMetricFamily(
        "sidecar_window_late_events", "Events older than the largest window when they arrived (ignored for windows, counted since start).", value=snap.late
    )
    yield CounterMetricFamily(
        "sidecar_window_overflow_events",
        "Events whose type/agent/workflow/model combination was folded into __overflow__ (the window sink's key cap).",
        value=snap.overflowed,
    )


def _top_groups(
    key: UInt16s, dur: Floats, of: Int32s, names: Sequence[str | None], n_names: int, per_key_events: Floats, limit: int,
) -> Iterator[tuple[str, float, list[float]]]:
    """(value, events, [p50, p90, p95, p99] or NaNs) for the `limit` most active values of a field."""
    per_group = np.bincount(of, weights=per_key_events, minlength=n_names)
    chosen = [g for g in np.argsort(-per_group, kind="stable").tolist() if per_group[g] > 0 and names[g] is not None][:limit]
    row_group = np.take(of.astype(np.uint16), key)
    order = np.argsort(row_group, kind="stable")
    sorted_groups = row_group[order]
    for g in chosen:
        values = dur[order[np.searchsorted(sorted_groups, g, "left") : np.searchsorted(sorted_groups, g, "right")]]
        at = at_ranks(values)
        name = names[g]
        assert name is not None
        yield name, float(per_group[g]), [math.nan] * len(PERCENTILES) if at is None else at[1:-1].tolist()

