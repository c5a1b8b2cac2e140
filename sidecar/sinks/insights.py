"""The insights store: per-subject sums and every duration, in buckets of event time.

`/v1/insights` compares a window with the baseline before it, per subject (one
combination of type, agent, workflow and model), and needs what the window sink does
not keep: error kinds, failures per invocation and the runs still open. Buckets of
`insights.bucket` seconds cover `insights.retention`; any window and baseline of whole
buckets is then a sum over buckets, with every duration kept (exact p95).

The pipeline (on the event loop) is the only writer. `snapshot` copies what a query needs
under a lock held only for the copy; `sidecar.insights` then works on the copy in a
worker thread, so a query never holds up ingest for longer than that copy.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sidecar.config import InsightsConfig
from sidecar.sinks.columns import fields, ints, or_zero
from sidecar.sinks.labelsets import LabelSets, Mapped
from sidecar.types import Batch, Event

Subject = tuple[str, str | None, str | None, str | None]  # type, agent, workflow, model

@dataclass(frozen=True)
class Storm:
    """An invocation (or run) whose failures reached insights.retry_failures."""

    agent: str | None
    model: str | None  # of its first failure
    failures: int  # so far
# Per-subject sums, in this order (a list each, so the hot path bumps items in place).
EVENTS, ERRORS, COST, INPUT, TOKEN_CALLS, TOKENS = FIELDS = range(6)  # TOKENS: input + output + other
# type -> (opens?, kind, is a run?): one lookup per event on the hot path. A run is keyed by its
# run_id, an invocation by its invocation_id.
_LIFECYCLE_OF = {
    "workflow.started": (True, "run", True), "agent.invoked": (True, "invocation", False),
    "workflow.completed": (False, "run", True), "workflow.failed": (False, "run", True),
    "agent.completed": (False, "invocation", False), "agent.failed": (False, "invocation", False),
}


# The numeric fields a bucket sums or keeps.
_NUMERIC = ("cost_usd", "input_tokens", "output_tokens", "tokens", "duration_ms")
_SERIALS = itertools.count()
# Once full, the open items and the failures per id drop their oldest this share of
# insights.max_active at a time (at least one).
_DROP_SHARE = 64
# A batch of fewer events than 1/SCATTER_BELOW of its bucket's subjects adds its sums row by row
# (np.add.at, O(batch)); a larger one by bincount over every subject (O(subjects), faster per event).
SCATTER_BELOW = 8
# Batches smaller than this wait to be filed together (until the waiting events reach it, the next
# maintain, about once a second, or a query): a batch costs ~40 us of numpy and comprehension
# set-up, which a one-event batch from a quiet connection would pay alone.
FILE_AT = 256


class _Bucket:
    """One bucket of event time, in columns: a row of sums per subject, durations as (row, value)
    chunks, one per batch, so that a batch is filed with a few numpy calls instead of list
    updates per event.

    Once past (`freeze`), it is sealed: `keys` and `table` hold the subjects and their sums, and
    `durations` each subject's array. A sealed bucket is never written again: a late event goes
    into a writable copy that replaces it (`thaw`), so a query may read a frozen bucket outside
    the lock while the pipeline goes on. A query reads a bucket still filling through a copy of
    it (`capture`), sealed outside the lock."""

    __slots__ = ("index", "by_number", "chunks", "durations", "kinds", "errors", "frozen", "sealed", "keys", "table", "serial", "written")

    def __init__(self) -> None:
        self.index: dict[Subject, int] = {}  # while filling: subject -> its row of `table`
        self.by_number = Mapped()  # while filling: a label-set number's row (sidecar.sinks.labelsets)
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []  # while filling: (rows, durations) per batch
        self.durations: dict[Subject, np.ndarray] = {}  # once sealed
        # Error kinds: by row while filling (a subject's 4-tuple cost ~0.9 us more per failure to
        # hash and compare, BENCHMARKS.md), by subject once sealed.
        self.kinds: Counter[tuple[int, str]] = Counter()
        self.errors: Counter[tuple[Subject, str]] = Counter()
        self.frozen = False  # sealed in the store: the rolled sums of `_Rolling` may keep it
        self.sealed = False
        self.written = False  # since the last maintain: a bucket still being written is not frozen yet
        self.serial = next(_SERIALS)  # a thawed copy gets a new one: cached sums of frozen buckets key on it
        self.keys: list[Subject] = []  # once sealed: the subjects, and their sums as rows of `table`
        self.table = np.zeros((0, len(FIELDS)))  # while filling, rows beyond len(index) are spare

    def reserve(self, rows: int) -> None:
        if rows > len(self.table):
            grown = np.zeros((max(rows, 2 * len(self.table), 64), len(FIELDS)))
            grown[: len(self.table)] = self.table
            self.table = grown

    def seal(self) -> None:
        """Turn the columns into `keys`, `table` and per-subject `durations`: no more writes."""
        keys = list(self.index)
        n = len(keys)
        durations: dict[Subject, np.ndarray] = {}
        if self.chunks:
            rows = np.concatenate([c[0] for c in self.chunks])
            # Each subject's durations in arrival order. As 16-bit keys the stable sort is a radix
            # sort: ~2.7x faster than on the 64-bit rows.
            order = np.argsort(rows.astype(np.uint16) if n <= 1 << 16 else rows, kind="stable")
            values = np.concatenate([c[1] for c in self.chunks])[order]
            counts = np.bincount(rows, minlength=n).tolist()
            start = 0
            for j, count in enumerate(counts):
                if count:
                    durations[keys[j]] = values[start : start + count]
                    start += count
        # The columns go: a sealed bucket keeps only arrays, which a full garbage collection
        # (set off by a query's allocations) does not walk (BENCHMARKS.md, issue 18).
        self.keys, self.table, self.durations = keys, self.table[:n].copy(), durations
        self.errors = Counter({(keys[row], kind): count for (row, kind), count in self.kinds.items()})
        self.index, self.chunks, self.by_number, self.kinds = {}, [], Mapped(), Counter()
        self.sealed = True

    def freeze(self) -> None:
        self.seal()
        self.frozen = True

    def capture(self) -> _Bucket:
        """A copy of a bucket still filling, for a query: O(subjects) under the store's lock
        (chunks are never written in place); the caller seals it after the lock."""
        out = _Bucket()
        out.index = dict(self.index)
        out.table = self.table[: len(self.index)].copy()
        out.chunks = list(self.chunks)
        out.kinds = self.kinds.copy()
        return out

    def thaw(self) -> _Bucket:
        """A writable copy of a sealed bucket."""
        out = _Bucket()
        out.index = {subject: j for j, subject in enumerate(self.keys)}
        out.reserve(len(self.keys))
        out.table[: len(self.keys)] = self.table
        if self.durations:
            rows = np.concatenate([np.full(len(v), out.index[s], dtype=np.intp) for s, v in self.durations.items()])
            out.chunks = [(rows, np.concatenate(list(self.durations.values())))]
        out.kinds = Counter({(out.index[subject], kind): count for (subject, kind), count in self.errors.items()})
        return out

    def rows(self) -> tuple[list[Subject], np.ndarray]:
        """The subjects and their sums (of a sealed bucket: the store's own are read through copies)."""
        assert self.sealed
        return self.keys, self.table


@dataclass
class Period:
    """Sums over a span of buckets: what `sidecar.insights` judges (one for the window, one for the
    baseline). `errors` is filled for the window only: no rule reads the baseline's."""

    seconds: float
    sums: dict[Subject, list[float]] = field(default_factory=dict)
    durations: dict[Subject, np.ndarray] = field(default_factory=dict)
    errors: Counter[tuple[Subject, str]] = field(default_factory=Counter)
    abandoned: Counter[str | None] = field(default_factory=Counter)  # runs by workflow that reached abandon_after here
    # The rules' columnar view of `sums` and `durations` (sidecar.insights.Grouping), made by the
    # first rule that groups them; the period's dicts are not changed once a rule reads them.
    grouping: Any = field(default=None, repr=False, compare=False)


OpenKey = tuple[str, str | None]  # ("run", workflow) or ("invocation", agent)
# (period role, grouping, span type, least samples) -> (the durations dict, per group: durations and their p95)
Kept = dict[tuple[str, tuple[str, ...], str, int], tuple[dict[Subject, np.ndarray], dict[tuple[str | None, ...], tuple[np.ndarray, float]]]]


@dataclass
class Snapshot:
    window: Period
    baseline: Period
    open: dict[OpenKey, np.ndarray]  # ages (seconds at the snapshot) of the runs / invocations not ended
    storms: list[Storm]  # invocations whose retry_failures-th failure fell in the window
    as_of: float
    exact: bool  # False when the subject cap or max_active dropped something
    abandon_after: float = 3600.0  # lifecycle.abandon_after when the snapshot was taken
    abandon_complete: bool = False  # the baseline starts after the store saw its first event + abandon_after
    # The store's cache of per-group durations and p95s, for `sidecar.insights`: per (period, grouping,
    # span type) the durations dict they came from and the groups. The baseline's dict is the store's
    # rolled result, the same object until a bucket enters or leaves it (once per insights.bucket), so
    # queries in between reuse its concatenations and partitions (a third of a query's CPU at 1M
    # samples); the window's is new per query and shared by `slow` and `latency_regression`. Held by
    # identity, so a stale entry never matches.
    kept: Kept = field(default_factory=dict)


class InsightsStore:
    """A sink: keeps `insights.retention` of event time in buckets (see module docstring)."""

    name = "insights"

    def __init__(
        self, config: InsightsConfig, clock: Callable[[], float] = time.time, abandon_after: float = 3600.0,
        label_sets: LabelSets | None = None,
    ):
        self.config = config
        self.label_sets = label_sets if label_sets is not None else LabelSets()
        self.clock = clock
        self.abandon_after = abandon_after  # lifecycle.abandon_after, as the metrics sink applies it (a reload sets it)
        # Runs that reached abandon_after with no end: (when, in event time, workflow), oldest first.
        self.abandoned: deque[tuple[float, str | None]] = deque()
        # Abandonment is counted only from the first event the store saw: before that + abandon_after,
        # runs that started while nobody watched would be missing, and a baseline would look clean.
        self.first_seen: float | None = None
        self.kept: Kept = {}  # see Snapshot.kept
        self.width = config.bucket
        self.buckets: dict[int, _Bucket] = {}
        # runs and invocations not ended: (kind, id) -> (start, name), insertion order ~ start order.
        # A query groups them by (kind, name) itself (`_open_starts`): kept grouped here, every start
        # and end paid ~1,200 instructions more on the hot path (BENCHMARKS.md).
        # (Plain dicts, once full dropping their oldest in chunks: see _drop_oldest.)
        self.open: dict[tuple[str, str], tuple[float, str | None]] = {}
        # failures per invocation (or run) id: (count, first failure ts, agent, model), oldest first.
        # Tuples of plain values, replaced on each failure: the collector stops tracking them, where
        # tens of thousands of lists made every full garbage collection walk them.
        self.fails: dict[str, tuple[int, float, str | None, str | None]] = {}
        self.storms: deque[tuple[float, str]] = deque()  # (when the count reached retry_failures, id)
        self.dropped = 0  # subjects past the cap, and open items pushed out by max_active
        self._waiting: list[Batch] = []  # consumed, not filed yet (FILE_AT)
        self._waiting_n = 0
        self._cache: dict[int, _Rolling] = {}
        self._rolling_lock = threading.Lock()
        self._lock = threading.Lock()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def consume(self, batch: Batch) -> None:
        events = batch.events
        if not events:
            return
        if self.first_seen is None:
            first = events[0].timestamp
            assert isinstance(first, float)  # the decoder normalises timestamps to epoch seconds
            self.first_seen = max(first, self.clock() - self.config.retention)
        if batch.label_sets is None or batch.label_sets.owner is not self.label_sets:
            self.label_sets.of(batch)  # numbered here, on the event loop (see MetricsSink.consume)
        with self._lock:
            self._waiting.append(batch)
            self._waiting_n += len(events)
            if self._waiting_n >= FILE_AT:
                self._file()

    def flush(self) -> None:
        """File the events still waiting (maintain and every query do it first)."""
        with self._lock:
            self._file()

    def _file(self) -> None:
        """File the waiting events (under the lock): each into its bucket of event time, in columns,
        then failures and open runs event by event in arrival order."""
        batches, self._waiting, self._waiting_n = self._waiting, [], 0
        if not batches:
            return
        events = batches[0].events if len(batches) == 1 else [ev for b in batches for ev in b.events]
        numbers = self.label_sets.array(batches, len(events))
        width = self.width
        oldest = self.clock() - self.config.retention
        times = fields(batches, "timestamp", events)  # the decoder normalises timestamps to epoch seconds
        stamps: list[float] = times.tolist()
        numeric = {name: fields(batches, name, events) for name in _NUMERIC}
        failed_at = self.label_sets.failed(batches)
        failed = np.zeros(len(events), dtype=bool)
        failed[failed_at] = True
        lo, hi = float(times.min()), float(times.max())
        if lo >= oldest and lo // width == hi // width:  # the common case: one bucket
            rows = self._fill(int(lo // width), events, numbers, numeric, failed)
        else:
            groups: dict[int, list[int]] = {}
            for i, ts in enumerate(stamps):
                if ts >= oldest:
                    groups.setdefault(int(ts // width), []).append(i)
            rows = [-1] * len(events)  # events past retention are not stored
            for index, chosen in groups.items():
                at = np.array(chosen, dtype=np.intp)
                got = self._fill(
                    index, [events[i] for i in chosen], numbers[at], {k: v[at] for k, v in numeric.items()}, failed[at]
                )
                for i, row in zip(chosen, got):
                    rows[i] = row
        # Failures per invocation, then the open runs: two separate states, each in batch order.
        if failed_at:
            for i in failed_at:
                if rows[i] >= 0:  # else not stored: past retention, or its subject past the cap
                    ev = events[i]
                    ident = ev.invocation_id or ev.run_id
                    if ident is not None:
                        self._failed(ident, stamps[i], ev.agent, ev.model)
        lifecycle_of, open_, max_active = _LIFECYCLE_OF, self.open, self.config.max_active
        for ev, ts, row in zip(events, stamps, rows):
            life = lifecycle_of.get(ev.type)
            if life is None or row < 0:
                continue
            opens, kind, run = life
            ident = ev.run_id if run else ev.invocation_id
            if ident is None:
                continue
            key = (kind, ident)
            if not opens:
                open_.pop(key, None)
                continue
            if key in open_:
                del open_[key]  # an id started again: a new run (it goes to the end of the order)
            elif len(open_) >= max_active:
                self.dropped += _drop_oldest(open_, max_active)
            open_[key] = (ts, ev.workflow if run else ev.agent)

    def _fill(self, index: int, events: list[Event], numbers: np.ndarray, numeric: dict[str, np.ndarray], failed: np.ndarray) -> list[int]:
        """File events of one bucket as columns; return each one's row, -1 for a subject past the cap.
        A row is found by the event's label-set number, or by its subject the first time.
        `numeric`: the events' _NUMERIC fields (sidecar.sinks.columns.field); `failed`: success is False."""
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = _Bucket()
        elif bucket.sealed:  # a late event: a query may be reading the frozen one
            bucket = self.buckets[index] = bucket.thaw()
        bucket.written = True
        subjects = bucket.index
        found = bucket.by_number.ids(numbers)
        capped = 0
        if found.min() < 0:
            get = subjects.get
            cap = self.config.max_subjects
            for i in np.flatnonzero(found < 0).tolist():
                ev = events[i]
                key = (ev.type, ev.agent, ev.workflow, ev.model)
                row = get(key, -1)
                if row < 0:
                    if len(subjects) >= cap:
                        capped += 1  # not noted: counted again each time
                        continue
                    row = subjects[key] = len(subjects)
                found[i] = row
                bucket.by_number.note(int(numbers[i]), row)
            bucket.reserve(len(subjects))
            self.dropped += capped
        rows: list[int] = found.tolist()
        if capped:
            kept = [i for i, row in enumerate(rows) if row >= 0]
            events, stored = [events[i] for i in kept], [rows[i] for i in kept]
            numeric = {k: v[kept] for k, v in numeric.items()}
            failed = failed[kept]
            at = ints(stored)
        else:
            stored, at = rows, found  # found: the same rows, as an array already
        if not stored:
            return rows
        n = len(subjects)
        tin = numeric["input_tokens"]
        reported = ~np.isnan(tin)
        tin = np.where(reported, tin, 0.0)
        columns = [  # in FIELDS order; counts are at most contract.MAX_COUNT, exact as floats
            np.ones(len(events)),
            failed.astype(np.int64),
            or_zero(numeric["cost_usd"]),
            tin,
            reported.astype(np.float64),
            tin + or_zero(numeric["output_tokens"]) + or_zero(numeric["tokens"]),
        ]
        table = bucket.table
        if len(stored) * SCATTER_BELOW >= n:
            for f, weights in enumerate(columns):
                table[:n, f] += np.bincount(at, weights, minlength=n)  # O(subjects) per column
        else:  # a small batch into a bucket of many subjects: O(batch), not O(subjects)
            np.add.at(table, at, np.array(columns, dtype=np.float64).T)
        took = numeric["duration_ms"]  # NaN: no duration
        timed = ~np.isnan(took)
        if timed.all():
            bucket.chunks.append((at, took))
        elif timed.any():
            bucket.chunks.append((at[timed], took[timed]))
        failures = np.flatnonzero(columns[ERRORS]).tolist()
        if failures:
            bucket.kinds.update([(stored[i], events[i].error or "unknown") for i in failures])
        return rows

    def _failed(self, ident: str, ts: float, agent: str | None, model: str | None) -> None:
        """Count failures per invocation as they come, so a query reads only the storms."""
        entry = self.fails.get(ident)
        if entry is None:
            if len(self.fails) >= self.config.max_active:
                self.dropped += _drop_oldest(self.fails, self.config.max_active)
            entry = (0, ts, agent, model)
        count = entry[0] + 1
        self.fails[ident] = (count, entry[1], entry[2], entry[3])  # an existing key keeps its place (oldest first)
        if count == self.config.retry_failures:
            self.storms.append((ts, ident))

    def maintain(self, now: float) -> None:
        """Drop buckets past retention, freeze past ones into arrays, forget stale open items."""
        oldest = math.floor((now - self.config.retention) / self.width)
        current = math.floor(now / self.width)
        with self._lock:
            self._file()
            for index in [i for i in self.buckets if i < oldest]:
                del self.buckets[index]
            for index, bucket in self.buckets.items():
                # A past bucket is frozen once a maintain period went by without writes to it: a
                # sender whose clock is behind keeps writing one, and freezing it each second only
                # to thaw it at the next batch copied all of its durations each time.
                if index < current - 1 and not bucket.sealed:
                    if bucket.written:
                        bucket.written = False
                    else:
                        bucket.freeze()
            cutoff = now - self.config.retention
            # A run open for abandon_after is abandoned (as agent_workflow_runs_total counts it), at
            # the event time it reached that; anything else is forgotten once past retention.
            give_up = now - self.abandon_after
            horizon = max(give_up, cutoff)
            stale = []
            for key, (ts, _) in self.open.items():  # oldest first: stop at the first one too young for either rule
                if ts >= horizon:
                    break
                if ts < (give_up if key[0] == "run" else cutoff):
                    stale.append(key)
            for key in stale:
                ts, name = self.open.pop(key)
                if key[0] == "run" and ts < give_up:
                    self.abandoned.append((ts + self.abandon_after, name))
            while self.abandoned and self.abandoned[0][0] < cutoff:
                self.abandoned.popleft()
            old = []
            for ident, (_, first, _, _) in self.fails.items():  # oldest first failure first
                if first >= cutoff:
                    break
                old.append(ident)
            for ident in old:
                del self.fails[ident]
            while self.storms and self.storms[0][0] < cutoff:
                self.storms.popleft()

    def _copies(self, start: int, end: int) -> list[tuple[int, _Bucket]]:
        """The buckets in [start, end): frozen ones as they are, the few still filling captured.
        Called under the lock; `_sealed` then seals the captures after it."""
        return [(i, b if b.frozen else b.capture()) for i, b in self.buckets.items() if start <= i < end]

    @staticmethod
    def _sealed(chosen: list[tuple[int, _Bucket]]) -> list[tuple[int, _Bucket]]:
        for _, bucket in chosen:
            if not bucket.sealed:
                bucket.seal()  # grouping its durations: O(n log n), outside the lock
        return chosen

    def _sums(self, role: int, buckets: list[_Bucket]) -> tuple[dict[Subject, list[float]], dict[Subject, np.ndarray], Counter[tuple[Subject, str]]]:
        """The period's sums and error kinds: the frozen buckets' part kept per role (baseline,
        window) and rolled forward as buckets enter, leave or thaw, plus the buckets still filling."""
        with self._rolling_lock:  # two queries at once must not roll the same state
            rolling = self._cache.setdefault(role, _Rolling())
            sums, durations = rolling.update([b for b in buckets if b.frozen])
            errors = rolling.errors.copy()
        live = [b for b in buckets if not b.frozen]
        for bucket in live:
            errors.update(bucket.errors)
        if not live:
            return sums, durations, errors
        more_sums, more_durations = _sum_buckets(live)
        sums = dict(sums)  # the kept dict stays as it was; its lists are replaced below, never changed
        for subject, v in more_sums.items():
            have = sums.get(subject)
            sums[subject] = v if have is None else [a + b for a, b in zip(have, v)]
        durations = dict(durations)
        for subject, values in more_durations.items():
            have_values = durations.get(subject)
            durations[subject] = values if have_values is None else np.concatenate((have_values, values))
        return sums, durations, errors

    def series(self, window: float) -> tuple[float, list[tuple[float, _Bucket]]]:
        """(now, [(bucket start time, copy of the bucket)]) for the last `window` seconds, oldest first."""
        now = self.clock()
        end = math.floor(now / self.width) + 1
        with self._lock:
            self._file()
            chosen = self._copies(end - round(window / self.width), end)
        chosen = self._sealed(chosen)
        return now, [(i * self.width, b) for i, b in sorted(chosen, key=lambda pair: pair[0])]

    def snapshot(self, window: float, baseline: float) -> Snapshot:
        """The window (the last `window` seconds) and the baseline before it (up to `baseline`
        seconds back from now), as whole buckets; both must be multiples of the bucket width."""
        now = self.clock()
        width = self.width
        end = math.floor(now / width) + 1  # the bucket holding `now` belongs to the window
        split = end - round(window / width)
        start = end - round(baseline / width)
        window_start = split * width
        with self._lock:
            self._file()
            chosen = self._copies(start, end)
            still_open = list(self.open.items())
            storms = [_storm(self.fails[i]) for ts, i in self.storms if ts >= window_start and i in self.fails]
            abandoned = list(self.abandoned)
            exact = self.dropped == 0
        chosen = self._sealed(chosen)
        open_items = {key: now - ts for key, ts in _open_starts(still_open).items()}
        periods = (Period(baseline - window), Period(window))
        for at, workflow in abandoned:
            if at >= start * width:
                periods[int(at >= window_start)].abandoned[workflow] += 1
        for at, period in enumerate(periods):
            mine = [b for i, b in chosen if int(i >= split) == at]
            period.sums, period.durations, errors = self._sums(at, mine)
            if at:  # error kinds are judged in the window only
                period.errors = errors
        complete = self.first_seen is not None and self.first_seen + self.abandon_after <= start * width
        return Snapshot(window=periods[1], baseline=periods[0], open=open_items, storms=storms, as_of=now, exact=exact,
                        abandon_after=self.abandon_after, abandon_complete=complete, kept=self.kept)


def _open_starts(still_open: list[tuple[tuple[str, str], tuple[float, str | None]]]) -> dict[OpenKey, np.ndarray]:
    """Start times of the open runs and invocations, by (kind, workflow or agent)."""
    grouped: dict[OpenKey, list[float]] = {}
    for (kind, _), (ts, name) in still_open:
        group = grouped.get((kind, name))
        if group is None:
            group = grouped[(kind, name)] = []
        group.append(ts)
    return {key: np.array(starts, dtype=np.float64) for key, starts in grouped.items()}


class _Rolling:
    """Sums and durations of a set of frozen buckets, updated by the buckets that entered or left
    (one or two per bucket width) instead of re-summed: a query pays O(subjects), not O(buckets x
    subjects). A subject whose events drop to zero leaves, so float dust cannot linger."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.buckets: dict[int, _Bucket] = {}
        self.total: dict[Subject, np.ndarray] = {}
        self.chunks: dict[Subject, dict[int, np.ndarray]] = {}
        # error kinds, rolled as the sums (a Counter.update per bucket per query cost ~10 ms at 1M samples)
        self.errors: Counter[tuple[Subject, str]] = Counter()
        self.result: tuple[dict[Subject, list[float]], dict[Subject, np.ndarray]] | None = None

    def update(self, frozen: list[_Bucket]) -> tuple[dict[Subject, list[float]], dict[Subject, np.ndarray]]:
        wanted = {b.serial: b for b in frozen}
        removed = [serial for serial in self.buckets if serial not in wanted]
        added = [b for serial, b in wanted.items() if serial not in self.buckets]
        if len(removed) + len(added) > len(wanted) // 2 + 1:
            self.reset()  # mostly new: start over
            removed, added = [], frozen
        for serial in removed:
            self._apply(self.buckets.pop(serial), -1)
        for bucket in added:
            self.buckets[bucket.serial] = bucket
            self._apply(bucket, 1)
        if self.result is None or removed or added:
            sums = {s: row.tolist() for s, row in self.total.items()}
            durations = {s: np.concatenate(list(c.values())) if len(c) > 1 else next(iter(c.values())) for s, c in self.chunks.items()}
            self.result = (sums, durations)
        return self.result

    def _apply(self, bucket: _Bucket, sign: int) -> None:
        if sign > 0:
            self.errors.update(bucket.errors)
        else:
            self.errors.subtract(bucket.errors)
            self.errors = +self.errors  # kinds that fell to zero leave
        keys, table = bucket.rows()
        for j, subject in enumerate(keys):
            row = self.total.get(subject)
            row = table[j] * sign if row is None else row + table[j] * sign
            if row[EVENTS] > 0:
                self.total[subject] = row
            else:
                self.total.pop(subject, None)
        for subject, values in bucket.durations.items():
            if sign > 0:
                self.chunks.setdefault(subject, {})[bucket.serial] = np.asarray(values, dtype=np.float64)
            else:
                chunks = self.chunks[subject]
                del chunks[bucket.serial]
                if not chunks:
                    del self.chunks[subject]


def _storm(entry: tuple[int, float, str | None, str | None]) -> Storm:
    count, _, agent, model = entry
    return Storm(agent, model, count)


def _sum_buckets(buckets: list[_Bucket]) -> tuple[dict[Subject, list[float]], dict[Subject, np.ndarray]]:
    """Per-subject sums (one scatter-add per bucket) and all durations of these buckets."""
    index: dict[Subject, int] = {}
    rows = []
    chunks: dict[Subject, list[np.ndarray]] = {}
    for bucket in buckets:
        keys, table = bucket.rows()
        rows.append((np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.intp), table))
        for subject, values in bucket.durations.items():
            chunks.setdefault(subject, []).append(np.asarray(values, dtype=np.float64))
    total = np.zeros((len(index), len(FIELDS)))
    for idx, table in rows:
        total[idx] += table  # a subject appears once per bucket: no repeated index
    totals = total.tolist()
    sums = {subject: totals[j] for subject, j in index.items()}
    return sums, {s: np.concatenate(c) if len(c) > 1 else c[0] for s, c in chunks.items()}


def _drop_oldest(items: dict[Any, Any], max_active: int) -> int:
    """Drop the oldest entries of a full `items` (insertion order), 1/_DROP_SHARE of `max_active` of
    them; return how many. Plain dicts, not OrderedDicts: an OrderedDict indexes all of its nodes
    again each time its dict is rebuilt, which made its operations ~4.5% of the sinks' instructions
    (BENCHMARKS.md). But a dict's next(iter()) walks the holes earlier deletions left at its front
    (~7 µs per call at 10k entries): dropping one at a time at the cap would pay that per start."""
    oldest = list(itertools.islice(items, max(1, max_active // _DROP_SHARE)))
    for key in oldest:
        del items[key]
    return len(oldest)
