"""The Prometheus sink: agent_* counters, histograms and lifecycle gauges.

Series live in tables whose numbers are numpy columns by row (`SeriesTable`). The hot path
finds one slot per distinct (type, agent, workflow, severity, model), which holds the rows that
combination updates, and adds a whole batch per column (`np.add.at`): per event there is one
dict lookup and a few attribute reads, no Python float rebound per metric. Lifecycle events and
tool calls are still handled one by one, in arrival order. `expose()` copies what it shows under
a lock held only between batches and formats it outside, so a scrape rendered in a worker thread
sees whole batches and never stalls ingest for long.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from sidecar.config import LifecycleConfig, MetricsConfig
from sidecar.contract import all_w3c_ids, w3c_span_id, w3c_trace_id
from sidecar.sinks.columns import fields
from sidecar.sinks.exposition import Exemplars, HistogramNames, exposed_separately, histogram_family, label_block, scalar_family, scalar_header
from sidecar.sinks.labelsets import LabelSets, Mapped
from sidecar.sinks.series import MAX_LABEL_LENGTH, HistogramTable, SeriesTable
from sidecar.types import Batch, Event

# OpenMetrics caps an exemplar's label set (names and values) at 128 UTF-8 characters, and
# Prometheus refuses the whole scrape over one bad exemplar: only W3C ids become labels, so a
# label set is at most len("trace_id") + 32 + len("span_id") + 16 = 63 characters.
MAX_EXEMPLAR_CHARS = 128
# Beyond this many label combinations the slot cache starts over (checked between batches), and
# beyond this many names each lifecycle gauge's row cache. Keys are cached only when every value
# is at most MAX_LABEL_LENGTH characters, so the caches stay under ~40 MB.
_MAX_SLOTS = 20_000
# Ids already found to be W3C ids, so that the events of one trace pay the check once. Bounded
# by entries of at most 32 characters (~1.5 MB).
_MAX_KNOWN_IDS = 10_000
# Run and invocation ids longer than this are kept as a prefix plus a digest, so the open-run
# table (lifecycle.max_active entries) holds bounded strings whatever ids are sent.
_MAX_ID = 128
# Batches smaller than this wait to be added together: adding a batch in columns costs ~100 µs
# whatever its size, and a quiet sender's reads hold one event each. Every read (a scrape,
# `collect`, `maintain`, about once a second) adds what is waiting first.
FILE_AT = 256

# Lifecycle type -> (what it does, the outcome a run's end counts).
_RUN_START, _RUN_END, _INVOKED, _INVOCATION_END = range(4)
_LIFECYCLE = {
    "workflow.started": (_RUN_START, ""), "workflow.completed": (_RUN_END, "completed"), "workflow.failed": (_RUN_END, "failed"),
    "agent.invoked": (_INVOKED, ""), "agent.completed": (_INVOCATION_END, ""), "agent.failed": (_INVOCATION_END, ""),
}
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
HistogramValues = tuple[list[int], float, Exemplars | None]

# A slot's columns: the row it updates in each table, -1 until the first event that needs it
# (a series exists only once used).
_EVENTS, _HIST, _INPUT, _OUTPUT, _UNKNOWN, _COST = range(6)


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


class _Lifecycle:
    """Open runs (or invocations) by id, oldest first, for the active gauge and the abandon sweep;
    and the ids that recently got their outcome, so that a late or repeated end is not a second one.

    Ids are passed through `bounded_id` by the caller; both tables hold at most `max_active` ids.
    An open id holds its gauge row, which the sweep keeps while the gauge is not zero. The gauge
    moves are noted and added in one numpy call per batch (`settle`), not one per event. The row of
    each name is cached, as the sink's slots cache theirs, and forgotten with them (`forget_rows`).
    """

    __slots__ = ("open", "ended", "max_active", "untracked", "gauges", "opened", "closed", "_rows")

    def __init__(self, max_active: int, gauges: SeriesTable):
        self.open: dict[str, tuple[int, float, str]] = {}
        # Insertion order is end order. An OrderedDict, since the oldest goes at every end once
        # full: a dict's next(iter()) walks the holes its earlier deletions left at the front
        # (~7 µs per call at 10k entries, against 0.5 µs for popitem(last=False)).
        self.ended: OrderedDict[str, None] = OrderedDict()
        self.max_active = max_active
        self.untracked = 0
        self.gauges = gauges
        self.opened: list[int] = []  # gauge rows to add 1 to, and to take 1 from, at `settle`
        self.closed: list[int] = []
        self._rows: dict[str | None, tuple[int, str]] = {}  # name -> its gauge row and label

    def start(self, ident: str, now: float, name: str | None) -> None:
        """Open `ident`, counted on the gauge of `name` (cut to a label), unless it is open."""
        open_ = self.open
        if ident in open_:
            return
        if len(open_) >= self.max_active:
            self.untracked += 1
            return
        if ident in self.ended:
            del self.ended[ident]  # an id reused for a new run
        found = self._rows.get(name)
        if found is None:
            found = self._row(name)
        row, label = found
        open_[ident] = (row, now, label)
        self.opened.append(row)

    def _row(self, name: str | None) -> tuple[int, str]:
        label = (name or "")[:MAX_LABEL_LENGTH]
        found = (self.gauges.row((label,)), label)
        if len(label) == len(name or ""):  # a longer name is not kept (no long string pinned)
            if len(self._rows) >= _MAX_SLOTS:
                self._rows.clear()
            self._rows[name] = found
        return found

    def forget_rows(self) -> None:
        """Drop the cached rows: the sweep may have freed one, or the cap changed."""
        self._rows.clear()

    def end(self, ident: str) -> bool:
        """Close `ident`; False when it already had an outcome (abandoned, or ended before)."""
        entry = self.open.pop(ident, None)
        if entry is not None:
            self.closed.append(entry[0])
        elif ident in self.ended:
            return False
        ended = self.ended  # remembered: an id closed now, or an end without a start we saw
        ended[ident] = None
        if len(ended) > self.max_active:
            ended.popitem(last=False)
        return True

    def close(self, ident: str) -> None:
        """Close `ident` if it is open. For invocations, which count no outcome: `end` without
        remembering the id (a second end finds nothing open either way)."""
        entry = self.open.pop(ident, None)
        if entry is not None:
            self.closed.append(entry[0])

    def abandon(self, cutoff: float) -> list[str]:
        """Close every entry started before `cutoff`; return the label each started with."""
        gone = []
        for ident, (_, started, _) in self.open.items():
            if started >= cutoff:
                break  # insertion order is start order
            gone.append(ident)
        return [self._close(ident) for ident in gone]

    def _close(self, ident: str) -> str:
        row, _, label = self.open.pop(ident)
        self.closed.append(row)
        self._remember(ident)
        return label

    def settle(self) -> None:
        """Move the gauges by the runs opened and closed since the last call."""
        if self.opened:
            np.add.at(self.gauges.values, self.opened, 1.0)
            self.opened.clear()
        if self.closed:
            np.subtract.at(self.gauges.values, self.closed, 1.0)
            self.closed.clear()

    def _remember(self, ident: str) -> None:
        ended = self.ended
        ended[ident] = None
        if len(ended) > self.max_active:
            ended.popitem(last=False)


def _present(column: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Positions of the values that are not NaN (None when all are) and those values."""
    missing = np.isnan(column)  # a decoded amount is never NaN: NaN is a missing field
    if not missing.any():
        return None, column
    where = np.flatnonzero(~missing)
    return where, column[where]


class MetricsSink:
    """Turns batches into agent_* series and exposes them as a prometheus_client Collector."""

    name = "metrics"

    def __init__(
        self, config: MetricsConfig, lifecycle: LifecycleConfig, registry: CollectorRegistry | None = None,
        label_sets: LabelSets | None = None,
    ):
        cap = config.max_series_per_metric
        self.config = config
        self.lifecycle = lifecycle
        self.bounds = config.duration_buckets
        self._bounds = np.array(self.bounds, dtype=float)
        self._les = [repr(float(b)) for b in self.bounds] + ["+Inf"]  # the `le` values, as written
        n_buckets = len(self.bounds)
        self.events = SeriesTable("agent_events", ("type", "agent", "workflow", "severity"), cap)
        self.durations = HistogramTable("agent_event_duration_seconds", ("type", "agent", "workflow"), cap, n_buckets)
        self.tokens = SeriesTable("agent_tokens", ("agent", "model", "token_type"), cap)
        self.cost = SeriesTable("agent_cost_usd", ("agent", "model"), cap)
        self.errors = SeriesTable("agent_errors", ("agent", "workflow", "error"), cap)
        self.workflows_active = SeriesTable("agent_workflows_active", ("workflow",), cap)
        self.invocations_active = SeriesTable("agent_invocations_active", ("agent",), cap)
        self.workflow_runs = SeriesTable("agent_workflow_runs", ("workflow", "outcome"), cap)
        self.tool_calls = SeriesTable("agent_tool_calls", ("agent", "tool", "outcome"), cap)
        self.tool_durations = HistogramTable("agent_tool_duration_seconds", ("agent", "tool"), cap, n_buckets)
        self._histograms = (self.durations, self.tool_durations)
        self._histogram_names = {t.name: HistogramNames.of(t.name, self._les) for t in self._histograms}
        # In exposition order.
        self.tables: tuple[SeriesTable, ...] = (
            self.events, self.durations, self.tokens, self.cost, self.errors, self.workflows_active, self.invocations_active,
            self.workflow_runs, self.tool_calls, self.tool_durations,
        )
        self._gauges = (self.workflows_active, self.invocations_active)
        # Slots: label combination -> slot number; by slot, its key and its row in each table; and
        # the slot of each label-set number (the batch's events are numbered once for every sink).
        self.label_sets = label_sets if label_sets is not None else LabelSets()
        self._slot_of = Mapped()
        self._slots: dict[SlotKey, int] = {}
        self._slot_keys: list[SlotKey | None] = []  # None: a slot of one batch only (see _slot)
        self._uncached: dict[int, SlotKey] = {}
        self._slot_rows = np.full((64, 6), -1, np.intp)
        # How each of a slot's columns makes its row, from the slot's key.
        self._makers: dict[int, Callable[[SlotKey], int]] = {
            _HIST: lambda k: self.durations.row((k[0], k[1] or "", k[2] or "")),
            _INPUT: lambda k: self.tokens.row((k[1] or "", k[4] or "", "input")),
            _OUTPUT: lambda k: self.tokens.row((k[1] or "", k[4] or "", "output")),
            _UNKNOWN: lambda k: self.tokens.row((k[1] or "", k[4] or "", "unknown")),
            _COST: lambda k: self.cost.row((k[1] or "", k[4] or "")),
        }
        self.exemplars_skipped = {"invalid_trace": 0, "invalid_span": 0}
        self._trace_ids: set[str] = set()  # known W3C trace ids
        self._span_ids: set[str] = set()  # known W3C span ids
        self._runs = _Lifecycle(lifecycle.max_active, self.workflows_active)
        self._invocations = _Lifecycle(lifecycle.max_active, self.invocations_active)
        self._lock = threading.Lock()
        self._waiting: list[Batch] = []  # consumed, not added yet (FILE_AT)
        self._n_waiting = 0
        # Expiry granularity: a tenth of the TTL, at most 10 s (a sweep walks every series).
        self._sweep_every = min(config.series_ttl / 10, 10.0)
        self._next_sweep = 0.0
        if registry is not None:
            registry.register(self)

    # -- the hot path -------------------------------------------------------

    def consume(self, batch: Batch) -> None:
        if not batch.events:
            return
        # Numbered here, on the event loop (the decoder numbers most batches already): `_file` may
        # run in a scrape's worker thread, and two threads making numbers at once could give two
        # label sets one number.
        if batch.label_sets is None or batch.label_sets.owner is not self.label_sets:
            self.label_sets.of(batch)
        with self._lock:
            self._waiting.append(batch)
            self._n_waiting += len(batch.events)
            if self._n_waiting >= FILE_AT:
                self._file()

    def flush(self) -> None:
        """File the events still waiting (the reads below do it themselves)."""
        with self._lock:
            self._file()

    def _file(self) -> None:
        """Add the waiting batches to the tables. Call under the lock."""
        batches, self._waiting, self._n_waiting = self._waiting, [], 0
        if not batches:
            return
        events = batches[0].events if len(batches) == 1 else [ev for b in batches for ev in b.events]
        numbers = self.label_sets.array(batches, len(events))
        if len(self._slot_keys) > _MAX_SLOTS:
            self._clear_slots()
        slots = self._slot_of.ids(numbers)
        if slots.min() < 0:
            for i in np.flatnonzero(slots < 0).tolist():
                slots[i] = slot = self._slot(events[i])
                self._slot_of.note(int(numbers[i]), slot)
        np.add.at(self.events.values, self._slot_rows[slots, _EVENTS], 1.0)
        where, durations = _present(fields(batches, "duration_ms", events))
        if len(durations):
            self._observe(events, slots, where, durations / 1000.0, batches)
        for table, column, name in (
            (self.tokens, _INPUT, "input_tokens"), (self.tokens, _OUTPUT, "output_tokens"), (self.tokens, _UNKNOWN, "tokens"),
            (self.cost, _COST, "cost_usd"),
        ):
            where, amounts = _present(fields(batches, name, events))
            if len(amounts):
                rows = self._rows(slots if where is None else slots[where], column)  # may grow the table's arrays
                np.add.at(table.values, rows, amounts)
        failed = [self.errors.row((ev.agent or "", ev.workflow or "", ev.error or "")) for ev in map(events.__getitem__, self.label_sets.failed(batches))]
        if failed:
            np.add.at(self.errors.values, failed, 1.0)
        outcomes: Counter[tuple[str, str]] = Counter()
        for batch in batches:  # in arrival order: a run's end after its start
            self._track(batch.events, batch.received_at, outcomes)
        for key, count in outcomes.items():
            self.workflow_runs.add(key, count)
        for ev in map(events.__getitem__, self.label_sets.tools(batches)):
            self._tool(ev, ev.tool)  # type: ignore[arg-type]  # events that name a tool
        self._runs.settle()
        self._invocations.settle()
        self._uncached.clear()

    def _observe(self, events: list[Event], slots: np.ndarray, where: np.ndarray | None, seconds: np.ndarray, batches: list[Batch]) -> None:
        """agent_event_duration_seconds for the events at `where` (all when None), with exemplars."""
        table = self.durations
        rows = self._rows(slots if where is None else slots[where], _HIST)
        buckets = np.searchsorted(self._bounds, seconds, side="left")  # bisect_left: `le` is inclusive
        if self.config.exemplars:
            stamps = fields(batches, "timestamp", events)
            if where is None:
                self._keep_exemplars(table, events, rows, buckets, seconds, stamps)
            else:
                self._keep_exemplars(table, [events[i] for i in where.tolist()], rows, buckets, seconds, stamps[where])
        np.add.at(table.counts, (rows, buckets), 1)
        np.add.at(table.values, rows, seconds)

    def _keep_exemplars(
        self, table: HistogramTable, events: list[Event], rows: np.ndarray, buckets: np.ndarray, seconds: np.ndarray, stamps: np.ndarray
    ) -> None:
        """The latest event with a W3C trace id in each (series, bucket) becomes its exemplar;
        `stamps`: the events' timestamps (NaN: none in epoch seconds).
        Every id of the batch is checked at once (the common case: all are W3C ids); only a batch
        with a bad one checks them one by one, counting those left out."""
        traces = [ev.trace_id for ev in events]
        spans = [ev.span_id for ev in events]
        n = len(traces)
        spanless = spans.count(None) == n
        # Every event has a trace id (the usual case) when no item is falsy: filter(None) tests
        # truth in C, where `None in traces` calls str.__eq__(None) per id. "" goes the long way.
        present: list[str] = traces if len(list(filter(None, traces))) == n else [t for t in traces if t is not None]  # type: ignore[assignment]  # no None in it
        if not (all_w3c_ids(present, 32) and (spanless or all_w3c_ids([s for s in spans if s is not None], 16))):
            for i, t in enumerate(traces):
                if t is not None:
                    ids = self._exemplar_ids(t, spans[i])
                    traces[i], spans[i] = (None, None) if ids is None else ids
            present = [t for t in traces if t is not None]
            spanless = spans.count(None) == n
        if not present:
            return
        if len(present) == n:  # the common case: every timed event has a trace id
            chosen, flat = None, rows * table.width + buckets
        else:
            chosen = np.flatnonzero([t is not None for t in traces])
            flat = rows[chosen] * table.width + buckets[chosen]
            seconds = seconds[chosen]
        # The last event per (series, bucket): the first of each in the reversed order.
        places, first = np.unique(flat[::-1], return_index=True)
        latest = len(flat) - 1 - first
        picked = latest if chosen is None else chosen[latest]  # positions in `events`
        np.put(table.ex_trace, places, np.fromiter(present, object, len(present))[latest])
        if spanless:
            table.ex_span.flat[places] = None
        else:
            np.put(table.ex_span, places, np.fromiter(spans, object, n)[picked])
        np.put(table.ex_value, places, seconds[latest])
        np.put(table.ex_time, places, stamps[picked])

    def _exemplar_ids(self, trace_id: str, span_id: str | None) -> tuple[str, str | None] | None:
        """The ids an exemplar may carry (W3C ids only: Prometheus refuses a scrape over one
        bad exemplar label), or None without a W3C trace id; counts what is left out."""
        if trace_id not in self._trace_ids:
            if not w3c_trace_id(trace_id):
                self.exemplars_skipped["invalid_trace"] += 1
                return None
            _remember(self._trace_ids, trace_id)
        if span_id is not None and span_id not in self._span_ids:
            if w3c_span_id(span_id):
                _remember(self._span_ids, span_id)
            else:
                self.exemplars_skipped["invalid_span"] += 1
                span_id = None
        return trace_id, span_id

    def _tool(self, ev: Event, tool: str) -> None:
        """agent_tool_calls_total and agent_tool_duration_seconds for an event that names its tool."""
        agent = ev.agent or ""
        self.tool_calls.add((agent, tool, "completed" if ev.success else "failed"), 1.0)
        d = ev.duration_ms
        if d is not None:
            table = self.tool_durations
            row = table.row((agent, tool))
            s = d / 1000.0
            i = int(np.searchsorted(self._bounds, s, side="left"))
            if self.config.exemplars and ev.trace_id is not None:
                ids = self._exemplar_ids(ev.trace_id, ev.span_id)
                if ids is not None:
                    ts = ev.timestamp
                    table.keep_exemplar(row, i, ids[0], ids[1], s, ts if isinstance(ts, float) else None)
            table.counts[row, i] += 1
            table.values[row] += s

    def _slot(self, ev: Event) -> int:
        key = (ev.type, ev.agent, ev.workflow, ev.severity, ev.model)
        slot = self._slots.get(key)  # made by an earlier event of this batch
        if slot is not None:
            return slot
        slot = len(self._slot_keys)
        if slot == len(self._slot_rows):
            grown = np.full((2 * slot, 6), -1, np.intp)
            grown[:slot] = self._slot_rows
            self._slot_rows = grown
        self._slot_rows[slot, _EVENTS] = self.events.row((ev.type, ev.agent or "", ev.workflow or "", ev.severity or ""))
        # A key with an over-long value would pin the full string (up to max_event_bytes) in the
        # cache; such events get a new slot each time instead, whose key is dropped with the batch.
        if all(v is None or len(v) <= MAX_LABEL_LENGTH for v in key):
            self._slots[key] = slot
            self._slot_keys.append(key)
        else:
            self._slot_keys.append(None)
            self._uncached[slot] = key
        return slot

    def _rows(self, slots: np.ndarray, column: int) -> np.ndarray:
        """The row of each slot in one of its columns, made for the slots that have none yet."""
        table = self._slot_rows
        rows: np.ndarray = table[slots, column]
        if rows.min() < 0:
            make = self._makers[column]
            for slot in dict.fromkeys(slots[rows < 0].tolist()):  # in order of appearance, as series were made before
                table[slot, column] = make(self._slot_keys[slot] or self._uncached[slot])
            rows = table[slots, column]
        return rows

    def _clear_slots(self) -> None:
        self._slots.clear()
        self._slot_of.clear()
        self._slot_keys.clear()
        self._uncached.clear()
        self._slot_rows[:] = -1
        self._runs.forget_rows()
        self._invocations.forget_rows()

    def _track(self, events: list[Event], now: float, outcomes: Counter[tuple[str, str]]) -> None:
        """Open and close runs and invocations, event by event; count each run's one outcome (the
        first of completed, failed or abandoned) in `outcomes`, by (workflow, outcome)."""
        lifecycle = _LIFECYCLE
        runs, invocations = self._runs, self._invocations
        for ev in events:
            found = lifecycle.get(ev.type)
            if found is None:
                continue
            what, outcome = found
            if what <= _RUN_END:
                ident = ev.run_id
                if ident and len(ident) > _MAX_ID:
                    ident = bounded_id(ident)
                if what == _RUN_START:
                    if ident:
                        runs.start(ident, now, ev.workflow)
                elif not ident or runs.end(ident):
                    outcomes[(ev.workflow or "", outcome)] += 1
            else:
                ident = ev.invocation_id
                if ident:
                    if len(ident) > _MAX_ID:
                        ident = bounded_id(ident)
                    if what == _INVOKED:
                        invocations.start(ident, now, ev.agent)
                    else:
                        invocations.close(ident)

    # -- housekeeping ---------------------------------------------------------

    async def start(self) -> None:
        pass  # all state is built in __init__; nothing runs between batches

    async def close(self) -> None:
        pass

    def maintain(self, now: float) -> None:
        with self._lock:
            self._file()
            cutoff = now - self.lifecycle.abandon_after
            for workflow in self._runs.abandon(cutoff):
                self.workflow_runs.add((workflow, "abandoned"), 1)
            self._invocations.abandon(cutoff)
            self._runs.settle()
            self._invocations.settle()
            if now >= self._next_sweep:
                self._next_sweep = now + self._sweep_every
                dropped = 0
                for table in self.tables:
                    dropped += table.sweep(now, self.config.series_ttl, keep_nonzero=table in self._gauges)
                if dropped:
                    self._clear_slots()  # slots may hold rows that just left their tables

    def reconfigure(self, config: MetricsConfig, lifecycle: LifecycleConfig) -> None:
        """Apply reloaded limits: the cap to new series (existing ones stay), the TTL and the
        abandon timeout from the next sweep, exemplars from the next batch. Bucket bounds and
        max_active need a restart (sidecar/reload.py keeps their running values)."""
        with self._lock:
            self.config = config
            self.lifecycle = lifecycle
            for table in self.tables:
                table.cap = config.max_series_per_metric
            self._runs.forget_rows()  # a name folded into __overflow__ under the old cap may have room now
            self._invocations.forget_rows()
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
            self._file()
            values = {t.name: {k: float(t.values[r]) for k, r in t.rows.items()} for t in self.tables if t not in self._histograms}
            hists: dict[str, dict[tuple[str, ...], HistogramValues]] = {
                t.name: {k: (t.counts[r].tolist(), float(t.values[r]), t.exemplars_of(r)) for k, r in t.rows.items()}
                for t in self._histograms
            }
            skipped = dict(self.exemplars_skipped)
            sizes = [(t.name, len(t.rows), t.overflowed, t.expired) for t in self.tables]
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
        only for the series that changed since the previous scrape (`SeriesTable.render`).

        The lock is held only to copy the shown rows' numbers (a few array copies per table) and
        the small counters, so the page holds whole batches: a histogram's `_sum`, `_count` and
        buckets agree. The formatting runs after it."""
        with self._lock:
            self._file()
            snaps = [(table, table.snapshot(openmetrics)) for table in self.tables]
            skipped = dict(self.exemplars_skipped)
            sizes = [(t.name, len(t.rows), t.overflowed, t.expired) for t in self.tables]
            untracked = self._runs.untracked + self._invocations.untracked
        out: list[str] = []
        for table, snap in snaps:
            name = table.name
            if isinstance(table, HistogramTable):
                lines = table.render_histogram(snap, self._histogram_names[name], openmetrics)  # type: ignore[arg-type]
                histogram_family(out, name, _HELP[name], lines, openmetrics)
            else:
                sample = scalar_header(out, name, _HELP[name], "gauge" if table in self._gauges else "counter", openmetrics)
                out.extend(table.render(snap, sample))
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
        self, name: str, labelnames: Sequence[str], hist: dict[tuple[str, ...], HistogramValues]
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
