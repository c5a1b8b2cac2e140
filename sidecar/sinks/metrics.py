"""The Prometheus sink: agent_* counters, histograms and lifecycle gauges.

The hot path groups a batch by label set in local dicts, then updates each series
once. Series live in plain dicts (`SeriesTable`); `collect()` copies them under a
lock held only between batches and builds the metric families outside it, so a
scrape rendered in a worker thread never sees a dict change size mid-iteration.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from sidecar.config import LifecycleConfig, MetricsConfig
from sidecar.sinks.series import SeriesTable
from sidecar.types import Batch

# OpenMetrics caps an exemplar's label set at 128 characters.
_MAX_TRACE_ID = 100


class _Histogram:
    __slots__ = ("counts", "sum", "exemplars")

    def __init__(self, n_buckets: int):
        self.counts = [0] * (n_buckets + 1)  # the last one is +Inf
        self.sum = 0.0
        self.exemplars: dict[int, tuple[str, float, float]] | None = None


class _Lifecycle:
    """Open runs (or invocations) by id, oldest first, for the active gauge and abandon sweep."""

    __slots__ = ("open", "max_active", "untracked")

    def __init__(self, max_active: int):
        self.open: dict[str, tuple[tuple[str], float]] = {}
        self.max_active = max_active
        self.untracked = 0

    def start(self, ident: str, key: tuple[str], now: float, gauge: SeriesTable) -> None:
        if ident in self.open:
            return
        if len(self.open) >= self.max_active:
            self.untracked += 1
            return
        if key not in gauge.values:
            key = gauge.admit(key, 1)
        self.open[ident] = (key, now)
        gauge.add(key, 1, 0, now)

    def end(self, ident: str, now: float, gauge: SeriesTable) -> None:
        entry = self.open.pop(ident, None)
        if entry is not None:
            gauge.add(entry[0], -1, 0, now)

    def abandon(self, cutoff: float, now: float, gauge: SeriesTable) -> list[tuple[str]]:
        """Close every entry started before `cutoff`; return their gauge keys."""
        gone = []
        for ident, (key, started) in self.open.items():
            if started >= cutoff:
                break  # insertion order is start order
            gone.append((ident, key))
        for ident, key in gone:
            del self.open[ident]
            gauge.add(key, -1, 0, now)
        return [key for _, key in gone]


class MetricsSink:
    """Turns batches into agent_* series and exposes them as a prometheus_client Collector."""

    name = "metrics"

    def __init__(self, config: MetricsConfig, lifecycle: LifecycleConfig, registry: CollectorRegistry | None = None):
        cap = config.max_series_per_metric
        self.config = config
        self.lifecycle = lifecycle
        self.bounds = config.duration_buckets
        self.events = SeriesTable("agent_events", ("type", "agent", "workflow", "severity"), cap)
        self.durations = SeriesTable("agent_event_duration_seconds", ("type", "agent", "workflow"), cap)
        self.tokens = SeriesTable("agent_tokens", ("agent", "model", "token_type"), cap)
        self.cost = SeriesTable("agent_cost_usd", ("agent", "model"), cap)
        self.errors = SeriesTable("agent_errors", ("agent", "workflow", "error"), cap)
        self.workflows_active = SeriesTable("agent_workflows_active", ("workflow",), cap)
        self.invocations_active = SeriesTable("agent_invocations_active", ("agent",), cap)
        self.workflow_runs = SeriesTable("agent_workflow_runs", ("workflow", "outcome"), cap)
        self.tables = (
            self.events, self.durations, self.tokens, self.cost, self.errors,
            self.workflows_active, self.invocations_active, self.workflow_runs,
        )
        self._runs = _Lifecycle(lifecycle.max_active)
        self._invocations = _Lifecycle(lifecycle.max_active)
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    # -- the hot path -------------------------------------------------------

    def consume(self, batch: Batch) -> None:
        ev_counts: dict[tuple, int] = {}
        durations: dict[tuple, list[float]] = {}
        exemplars: dict[tuple, tuple[str, float, float]] = {}
        tokens: dict[tuple, list] = {}
        cost: dict[tuple, list] = {}
        errors: dict[tuple, int] = {}
        lifecycle = []
        want_exemplars = self.config.exemplars
        for ev in batch.events:
            t = ev.type
            a = ev.agent or ""
            w = ev.workflow or ""
            k = (t, a, w, ev.severity)
            ev_counts[k] = ev_counts.get(k, 0) + 1
            d = ev.duration_ms
            if d is not None:
                hk = (t, a, w)
                vals = durations.get(hk)
                if vals is None:
                    durations[hk] = [d]
                else:
                    vals.append(d)
                if ev.trace_id and want_exemplars:
                    exemplars[hk] = (ev.trace_id, d, ev.timestamp)
            if ev.input_tokens is not None or ev.output_tokens is not None or ev.tokens is not None:
                m = ev.model or ""
                for kind, n in (("input", ev.input_tokens), ("output", ev.output_tokens), ("unknown", ev.tokens)):
                    if n is not None:
                        tk = (a, m, kind)
                        acc = tokens.get(tk)
                        if acc is None:
                            tokens[tk] = [n, 1]
                        else:
                            acc[0] += n
                            acc[1] += 1
            c = ev.cost_usd
            if c is not None:
                ck = (a, ev.model or "")
                acc = cost.get(ck)
                if acc is None:
                    cost[ck] = [c, 1]
                else:
                    acc[0] += c
                    acc[1] += 1
            if not ev.success:
                ek = (a, w, ev.error or "")
                errors[ek] = errors.get(ek, 0) + 1
            if t in _LIFECYCLE_TYPES:
                lifecycle.append(ev)
        now = batch.received_at
        with self._lock:
            add = self.events.add
            for k, n in ev_counts.items():
                add(k, n, n, now)
            for hk, vals in durations.items():
                self._observe(hk, vals, exemplars.get(hk), now)
            add = self.tokens.add
            for k, (n, events) in tokens.items():
                add(k, n, events, now)
            add = self.cost.add
            for k, (c, events) in cost.items():
                add(k, c, events, now)
            add = self.errors.add
            for k, n in errors.items():
                add(k, n, n, now)
            for ev in lifecycle:
                self._track(ev, now)

    def _observe(self, key: tuple, values: list[float], exemplar: tuple | None, now: float) -> None:
        table = self.durations
        h = table.values.get(key)
        if h is None:
            key = table.admit(key, len(values))
            h = table.values.get(key)
            if h is None:
                h = table.values[key] = _Histogram(len(self.bounds))
        table.touched[key] = now
        bounds = self.bounds
        counts = h.counts
        total = 0.0
        for ms in values:
            s = ms / 1000.0
            counts[bisect_left(bounds, s)] += 1
            total += s
        h.sum += total
        if exemplar is not None:
            trace_id, ms, ts = exemplar
            if h.exemplars is None:
                h.exemplars = {}
            h.exemplars[bisect_left(bounds, ms / 1000.0)] = (trace_id[:_MAX_TRACE_ID], ms / 1000.0, ts)

    def _track(self, ev, now: float) -> None:
        t = ev.type
        if t == "workflow.started":
            if ev.run_id:
                self._runs.start(ev.run_id, (ev.workflow or "",), now, self.workflows_active)
        elif t == "workflow.completed" or t == "workflow.failed":
            if ev.run_id:
                self._runs.end(ev.run_id, now, self.workflows_active)
            outcome = "completed" if t == "workflow.completed" else "failed"
            self.workflow_runs.add((ev.workflow or "", outcome), 1, 1, now)
        elif t == "agent.invoked":
            if ev.invocation_id:
                self._invocations.start(ev.invocation_id, (ev.agent or "",), now, self.invocations_active)
        elif ev.invocation_id:  # agent.completed / agent.failed
            self._invocations.end(ev.invocation_id, now, self.invocations_active)

    # -- housekeeping ---------------------------------------------------------

    def maintain(self, now: float) -> None:
        with self._lock:
            cutoff = now - self.lifecycle.abandon_after
            for (workflow,) in self._runs.abandon(cutoff, now, self.workflows_active):
                self.workflow_runs.add((workflow, "abandoned"), 1, 1, now)
            self._invocations.abandon(cutoff, now, self.invocations_active)
            cutoff = now - self.config.series_ttl
            for table in self.tables:
                table.expire(cutoff, keep_nonzero=table is self.workflows_active or table is self.invocations_active)

    # -- exposition -----------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # families are built at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = {t.name: dict(t.values) for t in self.tables if t is not self.durations}
            hist = {k: (h.counts[:], h.sum, dict(h.exemplars) if h.exemplars else None) for k, h in self.durations.values.items()}
            sizes = [(t.name, len(t.values), t.overflowed, t.expired) for t in self.tables]
            untracked = self._runs.untracked + self._invocations.untracked
        helps = {
            "agent_events": "Agent events received, by type, agent, workflow and severity.",
            "agent_tokens": "Tokens reported by events, by agent, model and token_type (input, output, unknown).",
            "agent_cost_usd": "Cost in US dollars reported by events.",
            "agent_errors": "Events with success false, by agent, workflow and error kind.",
            "agent_workflow_runs": "Workflow runs that ended, by outcome (completed, failed, abandoned).",
        }
        for table in self.tables:
            if table is self.durations:
                yield self._histogram_family(table, hist)
                continue
            values = snap[table.name]
            if table is self.workflows_active or table is self.invocations_active:
                what = "workflow runs" if table is self.workflows_active else "agent invocations"
                fam = GaugeMetricFamily(table.name, f"{what.capitalize()} started and not yet ended or abandoned.", labels=table.labelnames)
            else:
                fam = CounterMetricFamily(table.name, helps[table.name], labels=table.labelnames)
            for key, value in values.items():
                fam.add_metric(key, value)
            yield fam
        series = GaugeMetricFamily("sidecar_series", "Series currently exposed, by metric.", labels=["metric"])
        overflow = CounterMetricFamily(
            "sidecar_series_overflow", "Events folded into the __overflow__ series by the cardinality guard.", labels=["metric"]
        )
        expired = CounterMetricFamily("sidecar_series_expired", "Series removed after metrics.series_ttl without updates.", labels=["metric"])
        for name, n, over, exp in sizes:
            series.add_metric([name], n)
            overflow.add_metric([name], over)
            expired.add_metric([name], exp)
        yield series
        yield overflow
        yield expired
        yield CounterMetricFamily(
            "sidecar_lifecycle_untracked", "Runs or invocations not tracked because lifecycle.max_active was reached.", value=untracked
        )

    def _histogram_family(self, table: SeriesTable, hist: dict) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(
            table.name, "Duration of agent events that carry duration_ms, in seconds.", labels=table.labelnames
        )
        les = [_fmt(b) for b in self.bounds] + ["+Inf"]
        for key, (counts, total, exemplars) in hist.items():
            buckets = []
            cumulative = 0
            for i, le in enumerate(les):
                cumulative += counts[i]
                ex = None
                if exemplars and i in exemplars:
                    trace_id, value, ts = exemplars[i]
                    ex = Exemplar({"trace_id": trace_id}, value, ts)
                buckets.append((le, cumulative, ex) if ex else (le, cumulative))
            fam.add_metric(key, buckets, total)
        return fam


def _fmt(bound: float) -> str:
    return repr(float(bound))


_LIFECYCLE_TYPES = frozenset(
    {"workflow.started", "workflow.completed", "workflow.failed", "agent.invoked", "agent.completed", "agent.failed"}
)
