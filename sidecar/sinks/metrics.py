"""The Prometheus sink: agent_* counters, histograms and lifecycle gauges.

Series live in plain dicts of mutable cells (`SeriesTable`). The hot path looks up
one `_Slot` per distinct (type, agent, workflow, severity, model) and bumps the
cells it already holds, so an event costs one hash instead of one per metric.
`collect()` copies the values under a lock held only between batches and builds
the metric families outside it, so a scrape rendered in a worker thread never sees
a dict change size mid-iteration and never stalls ingest for long.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from sidecar.config import LifecycleConfig, MetricsConfig
from sidecar.sinks.series import Cell, HistogramCell, SeriesTable
from sidecar.types import Batch, Event

_MAX_TRACE_ID = 100  # OpenMetrics caps an exemplar's label set at 128 characters
_MAX_SLOTS = 100_000  # beyond this many label combinations the slot cache starts over

_LIFECYCLE_TYPES = frozenset(
    {"workflow.started", "workflow.completed", "workflow.failed", "agent.invoked", "agent.completed", "agent.failed"}
)

_HELP = {
    "agent_events": "Agent events received, by type, agent, workflow and severity.",
    "agent_event_duration_seconds": "Duration of agent events that carry duration_ms, in seconds.",
    "agent_tokens": "Tokens reported by events, by agent, model and token_type (input, output, unknown).",
    "agent_cost_usd": "Cost in US dollars reported by events.",
    "agent_errors": "Events with success false, by agent, workflow and error kind.",
    "agent_workflows_active": "Workflow runs started (by run_id) and not yet completed, failed or abandoned.",
    "agent_invocations_active": "Agent invocations started (by invocation_id) and not yet completed, failed or abandoned.",
    "agent_workflow_runs": "Workflow runs that ended, by outcome (completed, failed, abandoned).",
}


class _Slot:
    """The cells one label combination updates, resolved lazily (a series exists only once used)."""

    __slots__ = ("events", "hist", "input", "output", "unknown", "cost")

    def __init__(self, events: Cell) -> None:
        self.events = events
        self.hist = self.input = self.output = self.unknown = self.cost = None


class _Lifecycle:
    """Open runs (or invocations) by id, oldest first, for the active gauge and the abandon sweep."""

    __slots__ = ("open", "max_active", "untracked")

    def __init__(self, max_active: int):
        self.open: dict[str, tuple[Cell, float, str]] = {}
        self.max_active = max_active
        self.untracked = 0

    def start(self, ident: str, gauge: Cell, now: float, label: str) -> None:
        if ident in self.open:
            return
        if len(self.open) >= self.max_active:
            self.untracked += 1
            return
        self.open[ident] = (gauge, now, label)
        gauge.value += 1

    def end(self, ident: str) -> None:
        if ident in self.open:
            self._close(ident)

    def abandon(self, cutoff: float) -> list[str]:
        """Close every entry started before `cutoff`; return the label each started with."""
        gone = []
        for ident, (_, started, _) in self.open.items():
            if started >= cutoff:
                break  # insertion order is start order
            gone.append(ident)
        return [self._close(ident) for ident in gone]

    def _close(self, ident: str) -> str:
        gauge, _, label = self.open.pop(ident)
        gauge.value -= 1
        return label


class MetricsSink:
    """Turns batches into agent_* series and exposes them as a prometheus_client Collector."""

    name = "metrics"

    def __init__(self, config: MetricsConfig, lifecycle: LifecycleConfig, registry: CollectorRegistry | None = None):
        cap = config.max_series_per_metric
        self.config = config
        self.lifecycle = lifecycle
        self.bounds = config.duration_buckets
        n_buckets = len(self.bounds)
        self.events = SeriesTable("agent_events", ("type", "agent", "workflow", "severity"), cap)
        self.durations = SeriesTable(
            "agent_event_duration_seconds", ("type", "agent", "workflow"), cap, new_cell=lambda: HistogramCell(n_buckets)
        )
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
        self._gauges = (self.workflows_active, self.invocations_active)
        self._slots: dict[tuple, _Slot] = {}
        self._runs = _Lifecycle(lifecycle.max_active)
        self._invocations = _Lifecycle(lifecycle.max_active)
        self._lock = threading.Lock()
        # Expiry granularity: a tenth of the TTL, at most 10 s (a sweep walks every series).
        self._sweep_every = min(config.series_ttl / 10, 10.0)
        self._next_sweep = 0.0
        if registry is not None:
            registry.register(self)

    # -- the hot path -------------------------------------------------------

    def consume(self, batch: Batch) -> None:
        bounds = self.bounds
        slots = self._slots
        exemplars = self.config.exemplars
        now = batch.received_at
        with self._lock:
            for ev in batch.events:
                t = ev.type
                slot = slots.get((t, ev.agent, ev.workflow, ev.severity, ev.model))
                if slot is None:
                    slot = self._slot(ev)
                slot.events.value += 1
                d = ev.duration_ms
                if d is not None:
                    h = slot.hist
                    if h is None:
                        h = slot.hist = self.durations.cell((t, ev.agent or "", ev.workflow or ""))
                    s = d / 1000.0
                    i = bisect_left(bounds, s)
                    h.counts[i] += 1
                    h.sum += s
                    if exemplars and ev.trace_id:
                        if h.exemplars is None:
                            h.exemplars = {}
                        h.exemplars[i] = ev
                # Unrolled per field on purpose: a helper call per field costs ~10% of this loop.
                n = ev.input_tokens
                if n is not None:
                    c = slot.input
                    if c is None:
                        c = slot.input = self.tokens.cell((ev.agent or "", ev.model or "", "input"))
                    c.value += n
                n = ev.output_tokens
                if n is not None:
                    c = slot.output
                    if c is None:
                        c = slot.output = self.tokens.cell((ev.agent or "", ev.model or "", "output"))
                    c.value += n
                n = ev.tokens
                if n is not None:
                    c = slot.unknown
                    if c is None:
                        c = slot.unknown = self.tokens.cell((ev.agent or "", ev.model or "", "unknown"))
                    c.value += n
                n = ev.cost_usd
                if n is not None:
                    c = slot.cost
                    if c is None:
                        c = slot.cost = self.cost.cell((ev.agent or "", ev.model or ""))
                    c.value += n
                if not ev.success:
                    self.errors.cell((ev.agent or "", ev.workflow or "", ev.error or "")).value += 1
                if t in _LIFECYCLE_TYPES:
                    self._track(ev, now)

    def _slot(self, ev: Event) -> _Slot:
        if len(self._slots) >= _MAX_SLOTS:
            self._slots.clear()
        slot = _Slot(self.events.cell((ev.type, ev.agent or "", ev.workflow or "", ev.severity)))
        self._slots[(ev.type, ev.agent, ev.workflow, ev.severity, ev.model)] = slot
        return slot

    def _track(self, ev: Event, now: float) -> None:
        t = ev.type
        if t == "workflow.started":
            if ev.run_id:
                w = ev.workflow or ""
                self._runs.start(ev.run_id, self.workflows_active.cell((w,)), now, w)
        elif t == "agent.invoked":
            if ev.invocation_id:
                a = ev.agent or ""
                self._invocations.start(ev.invocation_id, self.invocations_active.cell((a,)), now, a)
        elif t.startswith("workflow."):
            if ev.run_id:
                self._runs.end(ev.run_id)
            outcome = "completed" if t == "workflow.completed" else "failed"
            self.workflow_runs.add((ev.workflow or "", outcome), 1)
        elif ev.invocation_id:  # agent.completed / agent.failed
            self._invocations.end(ev.invocation_id)

    # -- housekeeping ---------------------------------------------------------

    async def start(self) -> None:
        pass  # all state is built in __init__; nothing runs between batches

    async def close(self) -> None:
        pass

    def maintain(self, now: float) -> None:
        with self._lock:
            cutoff = now - self.lifecycle.abandon_after
            for workflow in self._runs.abandon(cutoff):
                self.workflow_runs.add((workflow, "abandoned"), 1)
            self._invocations.abandon(cutoff)
            if now >= self._next_sweep:
                self._next_sweep = now + self._sweep_every
                dropped = 0
                for table in self.tables:
                    dropped += table.sweep(now, self.config.series_ttl, keep_nonzero=table in self._gauges)
                if dropped:
                    self._slots.clear()  # slots may hold cells that just left their tables

    # -- exposition -----------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # families are built at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = {t.name: {k: c.value for k, c in t.cells.items()} for t in self.tables if t is not self.durations}
            hist = {
                k: (h.counts[:], h.sum, dict(h.exemplars) if h.exemplars else None) for k, h in self.durations.cells.items()
            }
            sizes = [(t.name, len(t.cells), t.overflowed, t.expired) for t in self.tables]
            untracked = self._runs.untracked + self._invocations.untracked
        for table in self.tables:
            if table is self.durations:
                yield self._histogram_family(hist)
                continue
            kind = GaugeMetricFamily if table in self._gauges else CounterMetricFamily
            fam = kind(table.name, _HELP[table.name], labels=table.labelnames)
            for key, value in values[table.name].items():
                fam.add_metric(key, value)
            yield fam
        series = GaugeMetricFamily("sidecar_series", "Series currently exposed, by metric.", labels=["metric"])
        overflow = CounterMetricFamily(
            "sidecar_series_overflow", "New label sets folded into the __overflow__ series by the cardinality guard.", labels=["metric"]
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

    def _histogram_family(self, hist: dict) -> HistogramMetricFamily:
        table = self.durations
        fam = HistogramMetricFamily(table.name, _HELP[table.name], labels=table.labelnames)
        les = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        for key, (counts, total, exemplars) in hist.items():
            buckets = []
            cumulative = 0
            for i, le in enumerate(les):
                cumulative += counts[i]
                if exemplars and i in exemplars:
                    ev = exemplars[i]  # the latest event with a trace_id in this bucket
                    ex = Exemplar({"trace_id": ev.trace_id[:_MAX_TRACE_ID]}, ev.duration_ms / 1000.0, ev.timestamp)
                    buckets.append((le, cumulative, ex))
                else:
                    buckets.append((le, cumulative))
            fam.add_metric(key, buckets, total)
        return fam
