"""The Prometheus sink: agent_* counters, histograms and lifecycle gauges.

Series live in plain dicts of mutable cells (`SeriesTable`). The hot path looks up
one `_Slot` per distinct (type, agent, workflow, severity, model) and bumps the
cells it already holds, so an event costs one hash instead of one per metric.
`collect()` copies the values under a lock held only between batches and builds
the metric families outside it, so a scrape rendered in a worker thread never sees
a dict change size mid-iteration and never stalls ingest for long.
"""

from __future__ import annotations

import hashlib
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from sidecar.config import LifecycleConfig, MetricsConfig
from sidecar.contract import all_w3c_ids, w3c_span_id, w3c_trace_id
from sidecar.sinks.exposition import HistogramNames, exposed_separately, histogram_family, label_block, scalar_family, scalar_header
from sidecar.sinks.series import MAX_LABEL_LENGTH, Cell, ExemplarSample, HistogramCell, SeriesTable
from sidecar.types import Batch, Event

# OpenMetrics caps an exemplar's label set (names and values) at 128 UTF-8 characters, and
# Prometheus refuses the whole scrape over one bad exemplar: only W3C ids become labels, so a
# label set is at most len("trace_id") + 32 + len("span_id") + 16 = 63 characters.
MAX_EXEMPLAR_CHARS = 128
# Beyond this many label combinations the slot cache starts over. Keys are cached only when
# every value is at most MAX_LABEL_LENGTH characters, so the cache stays under ~40 MB.
_MAX_SLOTS = 20_000
# Ids already found to be W3C ids, so that the events of one trace pay the check once. Bounded
# by entries of at most 32 characters (~1.5 MB).
_MAX_KNOWN_IDS = 10_000
# Run and invocation ids longer than this are kept as a prefix plus a digest, so the open-run
# table (lifecycle.max_active entries) holds bounded strings whatever ids are sent.
_MAX_ID = 128

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
    "agent_workflow_runs": "Workflow runs that ended, by outcome (completed, failed, abandoned); one outcome per run.",
    "agent_tool_calls": "Events that name a tool (tool.call), by agent, tool and outcome (completed, failed).",
    "agent_tool_duration_seconds": "Duration of events that name a tool and carry duration_ms, in seconds, by agent and tool.",
    "sidecar_series": "Series currently exposed, by metric.",
    "sidecar_series_overflow": "New label sets folded into the __overflow__ series by the cardinality guard.",
    "sidecar_series_expired": "Series removed after metrics.series_ttl without updates.",
    "sidecar_lifecycle_untracked": "Runs or invocations not tracked because lifecycle.max_active was reached.",
    "sidecar_exemplar_ids_ignored": "Events with a duration whose trace or span id is not a W3C id, so it is left out of the exemplar.",
}

SlotKey = tuple[str, str | None, str | None, str | None, str | None]
HistogramSnapshot = tuple[list[int], float, dict[int, ExemplarSample] | None]


def bounded_id(ident: str) -> str:
    """`ident` itself, or for a long one a prefix and a digest: distinct ids stay distinct."""
    if len(ident) <= _MAX_ID:
        return ident
    digest = hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{ident[:64]}#{digest}"


def _remember(known: set[str], ident: str) -> None:
    if len(known) >= _MAX_KNOWN_IDS:
        known.clear()
    known.add(ident)


def exemplar_chars(labels: dict[str, str]) -> int:
    """The length OpenMetrics limits: the label names and values of one exemplar, in characters."""
    return sum(len(k) + len(v) for k, v in labels.items())


class _Slot:
    """The cells one label combination updates, resolved lazily (a series exists only once used)."""

    __slots__ = ("events", "hist", "input", "output", "unknown", "cost")

    def __init__(self, events: Cell) -> None:
        self.events = events
        self.hist: HistogramCell | None = None
        self.input: Cell | None = None
        self.output: Cell | None = None
        self.unknown: Cell | None = None
        self.cost: Cell | None = None


class _Lifecycle:
    """Open runs (or invocations) by id, oldest first, for the active gauge and the abandon sweep;
    and the ids that recently got their outcome, so that a late or repeated end is not a second one.

    Ids are passed through `bounded_id` by the caller; both tables hold at most `max_active` ids.
    """

    __slots__ = ("open", "ended", "max_active", "untracked")

    def __init__(self, max_active: int):
        self.open: dict[str, tuple[Cell, float, str]] = {}
        # Insertion order is end order. An OrderedDict, since the oldest goes at every end once
        # full: a dict's next(iter()) walks the holes its earlier deletions left at the front
        # (~7 µs per call at 10k entries, against 0.5 µs for popitem(last=False)).
        self.ended: OrderedDict[str, None] = OrderedDict()
        self.max_active = max_active
        self.untracked = 0

    def start(self, ident: str, gauges: SeriesTable[Cell], now: float, label: str) -> None:
        """Open `ident`, counted on the gauge of `label`, looked up only for an id not open yet."""
        if ident in self.open:
            return
        if len(self.open) >= self.max_active:
            self.untracked += 1
            return
        self.ended.pop(ident, None)  # an id reused for a new run
        gauge = gauges.cell((label,))
        self.open[ident] = (gauge, now, label)
        gauge.value += 1

    def end(self, ident: str) -> bool:
        """Close `ident`; False when it already had an outcome (abandoned, or ended before)."""
        if ident in self.open:
            self._close(ident)
            return True
        if ident in self.ended:
            return False
        self._remember(ident)  # an end without a start we saw: its one outcome
        return True

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
        self._remember(ident)
        return label

    def _remember(self, ident: str) -> None:
        ended = self.ended
        ended[ident] = None
        if len(ended) > self.max_active:
            ended.popitem(last=False)


class MetricsSink:
    """Turns batches into agent_* series and exposes them as a prometheus_client Collector."""

    name = "metrics"

    def __init__(self, config: MetricsConfig, lifecycle: LifecycleConfig, registry: CollectorRegistry | None = None):
        cap = config.max_series_per_metric
        self.config = config
        self.lifecycle = lifecycle
        self.bounds = config.duration_buckets
        self._les = [repr(float(b)) for b in self.bounds] + ["+Inf"]  # the `le` values, as written
        n_buckets = len(self.bounds)
        self.events = SeriesTable("agent_events", ("type", "agent", "workflow", "severity"), cap, Cell)
        self.durations = SeriesTable(
            "agent_event_duration_seconds", ("type", "agent", "workflow"), cap, new_cell=lambda: HistogramCell(n_buckets)
        )
        self.tokens = SeriesTable("agent_tokens", ("agent", "model", "token_type"), cap, Cell)
        self.cost = SeriesTable("agent_cost_usd", ("agent", "model"), cap, Cell)
        self.errors = SeriesTable("agent_errors", ("agent", "workflow", "error"), cap, Cell)
        self.workflows_active = SeriesTable("agent_workflows_active", ("workflow",), cap, Cell)
        self.invocations_active = SeriesTable("agent_invocations_active", ("agent",), cap, Cell)
        self.workflow_runs = SeriesTable("agent_workflow_runs", ("workflow", "outcome"), cap, Cell)
        self.tool_calls = SeriesTable("agent_tool_calls", ("agent", "tool", "outcome"), cap, Cell)
        self.tool_durations = SeriesTable(
            "agent_tool_duration_seconds", ("agent", "tool"), cap, new_cell=lambda: HistogramCell(n_buckets)
        )
        self._cell_tables = (
            self.events, self.tokens, self.cost, self.errors, self.workflows_active, self.invocations_active, self.workflow_runs,
            self.tool_calls,
        )
        self._histograms = (self.durations, self.tool_durations)
        self._histogram_names = {t.name: HistogramNames.of(t.name, self._les) for t in self._histograms}
        # In exposition order.
        self.tables: tuple[SeriesTable[Cell] | SeriesTable[HistogramCell], ...] = (
            self.events, self.durations, *self._cell_tables[1:], self.tool_durations,
        )
        self._gauges = (self.workflows_active, self.invocations_active)
        self._slots: dict[SlotKey, _Slot] = {}
        self.exemplars_skipped = {"invalid_trace": 0, "invalid_span": 0}
        self._trace_ids: set[str] = set()  # known W3C trace ids
        self._span_ids: set[str] = set()  # known W3C span ids
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
        events = batch.events
        # Every id of the batch checked at once (the common case: all are W3C ids): the loop then
        # keeps exemplars without a check per event, which cost a third of this sink's time.
        ids_ok = exemplars and all_w3c_ids([ev.trace_id for ev in events if ev.trace_id is not None], 32) and all_w3c_ids(
            [ev.span_id for ev in events if ev.span_id is not None], 16
        )
        with self._lock:
            for ev in events:
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
                    trace_id = ev.trace_id
                    if trace_id is not None and exemplars:  # before the count: see HistogramCell.lines
                        if ids_ok:
                            kept = h.exemplars
                            if kept is None:
                                kept = h.exemplars = {}
                            kept[i] = (trace_id, ev.span_id, s, ev.timestamp)  # type: ignore[assignment]  # a float once decoded
                        else:
                            self._exemplar(h, i, ev, s)
                    h.counts[i] += 1
                    h.sum += s
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
                usd = ev.cost_usd
                if usd is not None:
                    c = slot.cost
                    if c is None:
                        c = slot.cost = self.cost.cell((ev.agent or "", ev.model or ""))
                    c.value += usd
                if not ev.success:
                    self.errors.cell((ev.agent or "", ev.workflow or "", ev.error or "")).value += 1
                if t in _LIFECYCLE_TYPES:
                    self._track(ev, now)
                if ev.tool is not None:
                    self._tool(ev, ev.tool)

    def _tool(self, ev: Event, tool: str) -> None:
        """agent_tool_calls_total and agent_tool_duration_seconds for an event that names its tool."""
        agent = ev.agent or ""
        self.tool_calls.cell((agent, tool, "completed" if ev.success else "failed")).value += 1
        d = ev.duration_ms
        if d is not None:
            h = self.tool_durations.cell((agent, tool))
            s = d / 1000.0
            i = bisect_left(self.bounds, s)
            if self.config.exemplars and ev.trace_id is not None:
                self._exemplar(h, i, ev, s)  # before the count: see HistogramCell.lines
            h.counts[i] += 1
            h.sum += s

    def _exemplar(self, h: HistogramCell, bucket: int, ev: Event, seconds: float) -> None:
        """Keep the event's W3C ids (only those: Prometheus refuses a scrape over one bad
        exemplar label) as the bucket's exemplar; count an id that cannot be one."""
        trace_id = ev.trace_id
        if trace_id is None:
            return
        if trace_id not in self._trace_ids:
            if not w3c_trace_id(trace_id):
                self.exemplars_skipped["invalid_trace"] += 1
                return
            _remember(self._trace_ids, trace_id)
        span_id = ev.span_id
        if span_id is not None and span_id not in self._span_ids:
            if w3c_span_id(span_id):
                _remember(self._span_ids, span_id)
            else:
                self.exemplars_skipped["invalid_span"] += 1
                span_id = None
        if h.exemplars is None:
            h.exemplars = {}
        timestamp = ev.timestamp
        h.exemplars[bucket] = (trace_id, span_id, seconds, timestamp if isinstance(timestamp, float) else None)

    def _slot(self, ev: Event) -> _Slot:
        slot = _Slot(self.events.cell((ev.type, ev.agent or "", ev.workflow or "", ev.severity or "")))
        key = (ev.type, ev.agent, ev.workflow, ev.severity, ev.model)
        # A key with an over-long value would pin the full string (up to max_event_bytes) in the
        # cache; such events take this slower path each time instead.
        if all(v is None or len(v) <= MAX_LABEL_LENGTH for v in key):
            if len(self._slots) >= _MAX_SLOTS:
                self._slots.clear()
            self._slots[key] = slot
        return slot

    def _track(self, ev: Event, now: float) -> None:
        t = ev.type
        if t == "workflow.started":
            if ev.run_id:
                self._runs.start(bounded_id(ev.run_id), self.workflows_active, now, (ev.workflow or "")[:MAX_LABEL_LENGTH])
        elif t == "agent.invoked":
            if ev.invocation_id:
                self._invocations.start(bounded_id(ev.invocation_id), self.invocations_active, now, (ev.agent or "")[:MAX_LABEL_LENGTH])
        elif t.startswith("workflow."):  # workflow.completed / workflow.failed
            # One outcome per run: the first of completed, failed or abandoned.
            if not ev.run_id or self._runs.end(bounded_id(ev.run_id)):
                outcome = "completed" if t == "workflow.completed" else "failed"
                self.workflow_runs.add((ev.workflow or "", outcome), 1)
        elif ev.invocation_id:  # agent.completed / agent.failed
            self._invocations.end(bounded_id(ev.invocation_id))

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

    def reconfigure(self, config: MetricsConfig, lifecycle: LifecycleConfig) -> None:
        """Apply reloaded limits: the cap to new series (existing ones stay), the TTL and the
        abandon timeout from the next sweep, exemplars from the next batch. Bucket bounds and
        max_active need a restart (sidecar/reload.py keeps their running values)."""
        with self._lock:
            self.config = config
            self.lifecycle = lifecycle
            for table in self.tables:
                table.cap = config.max_series_per_metric
            self._sweep_every = min(config.series_ttl / 10, 10.0)
            self._next_sweep = 0.0

    # -- exposition -----------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # families are built at scrape time; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's view (registry.get_sample_value, generate_latest on the registry).
        /metrics renders the same samples through `expose`; tests/sinks/test_exposition.py
        holds the two to the same bytes."""
        if exposed_separately.get():
            return
        with self._lock:
            values = {t.name: {k: c.value for k, c in t.cells.items()} for t in self._cell_tables}
            hists: dict[str, dict[tuple[str, ...], HistogramSnapshot]] = {
                t.name: {k: (h.counts[:], h.sum, dict(h.exemplars) if h.exemplars else None) for k, h in t.cells.items()}
                for t in self._histograms
            }
            skipped = dict(self.exemplars_skipped)
            sizes = [(t.name, len(t.cells), t.overflowed, t.expired) for t in self.tables]
            untracked = self._runs.untracked + self._invocations.untracked
        for table in self.tables:
            if table.name in hists:
                yield self._histogram_family(table.name, table.labelnames, hists[table.name])
                continue
            kind = GaugeMetricFamily if table in self._gauges else CounterMetricFamily
            fam = kind(table.name, _HELP[table.name], labels=table.labelnames)
            for key, value in values[table.name].items():
                fam.add_metric(key, value)
            yield fam
        series = GaugeMetricFamily("sidecar_series", _HELP["sidecar_series"], labels=["metric"])
        overflow = CounterMetricFamily("sidecar_series_overflow", _HELP["sidecar_series_overflow"], labels=["metric"])
        expired = CounterMetricFamily("sidecar_series_expired", _HELP["sidecar_series_expired"], labels=["metric"])
        for name, n, over, exp in sizes:
            series.add_metric([name], n)
            overflow.add_metric([name], over)
            expired.add_metric([name], exp)
        yield series
        yield overflow
        yield expired
        yield CounterMetricFamily("sidecar_lifecycle_untracked", _HELP["sidecar_lifecycle_untracked"], value=untracked)
        ignored = CounterMetricFamily("sidecar_exemplar_ids_ignored", _HELP["sidecar_exemplar_ids_ignored"], labels=["reason"])
        for reason, n in skipped.items():
            ignored.add_metric([reason], n)
        yield ignored

    def expose(self, openmetrics: bool) -> str:
        """The same families as `collect`, in the same order and bytes, rendered from the label
        blocks each series keeps: the scrape's cost is per number, not per Python object, and
        only for the series that changed since the previous scrape (`Cell.line`, `HistogramCell.lines`).

        The lock is held only to take the list of series (a dict must not change size while it
        is walked) and the small counters. Values are read after it, each whole: a float under
        the GIL, a histogram's counts as one slice (so `_count` is its `+Inf` bucket and the
        buckets are cumulative). A histogram's `_sum` may lead or trail its counts by the
        events of the batch being consumed at that instant, as prometheus_client's own
        Histogram allows (its sum and buckets are separate values)."""
        with self._lock:
            scalars = {t.name: list(t.cells.values()) for t in self._cell_tables}
            hists = {t.name: list(t.cells.values()) for t in self._histograms}
            skipped = dict(self.exemplars_skipped)
            sizes = [(t.name, len(t.cells), t.overflowed, t.expired) for t in self.tables]
            untracked = self._runs.untracked + self._invocations.untracked
        out: list[str] = []
        for table in self.tables:
            name = table.name
            if name in hists:
                names = self._histogram_names[name]
                histogram_family(out, name, _HELP[name], [h.lines(names, openmetrics) for h in hists[name]], openmetrics)
            else:
                sample = scalar_header(out, name, _HELP[name], "gauge" if table in self._gauges else "counter", openmetrics)
                out.extend([c.line(sample) for c in scalars[name]])
        blocks = [label_block(("metric",), (name,)) for name, _, _, _ in sizes]
        for family, kind, numbers in (
            ("sidecar_series", "gauge", [n for _, n, _, _ in sizes]),
            ("sidecar_series_overflow", "counter", [over for _, _, over, _ in sizes]),
            ("sidecar_series_expired", "counter", [exp for _, _, _, exp in sizes]),
        ):
            scalar_family(out, family, _HELP[family], kind, list(zip(blocks, numbers)), openmetrics)
        scalar_family(out, "sidecar_lifecycle_untracked", _HELP["sidecar_lifecycle_untracked"], "counter", [("", untracked)], openmetrics)
        reasons = [(label_block(("reason",), (r,)), n) for r, n in skipped.items()]
        scalar_family(out, "sidecar_exemplar_ids_ignored", _HELP["sidecar_exemplar_ids_ignored"], "counter", reasons, openmetrics)
        return "".join(out)

    def _histogram_family(
        self, name: str, labelnames: Sequence[str], hist: dict[tuple[str, ...], HistogramSnapshot]
    ) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, _HELP[name], labels=labelnames)
        les = self._les
        for key, (counts, total, exemplars) in hist.items():
            buckets: list[Any] = []
            cumulative = 0
            for i, le in enumerate(les):
                cumulative += counts[i]
                if exemplars and i in exemplars:
                    trace_id, span_id, value, timestamp = exemplars[i]  # the latest event with a W3C trace_id here
                    labels = {"trace_id": trace_id} if span_id is None else {"trace_id": trace_id, "span_id": span_id}
                    buckets.append((le, cumulative, Exemplar(labels, value, timestamp)))
                else:
                    buckets.append((le, cumulative))
            fam.add_metric(list(key), buckets, total)
        return fam
