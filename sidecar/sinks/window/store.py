"""The window store: the one place window state changes (filing, eviction, sampling).

Layout (all numpy, so memory is a few machine words per event, not Python objects):

* **rows** of the events inside the largest window, sorted by event timestamp, one typed
  column per field (ts, duration, interned key, run id, tokens, cost). Every window is
  then a suffix of the rows: `[searchsorted(ts, now - w), end)`.
* per window, **running counters per key** (a key is one interned combination of type,
  agent, workflow, model, tool, severity and failure): events, durations, tokens and cost, added
  when events enter the window and subtracted when they leave, so every count and sum
  (filtered or not) is O(keys), independent of the event count.
* per window, a **sorted multiset of durations** (`SortedValues`) for exact quantiles.

`consume` only turns the batch into columns (the hot path); `flush` files them in bulk: at
FLUSH_EVENTS pending events, on `maintain` (about once a second), and before a snapshot.
All of these run on one thread (the event loop's, in the app), so no lock is needed: a
query or a scrape reads a `Snapshot`, which the store makes on that thread.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sidecar.config import WindowsConfig, format_duration
from sidecar.sinks.columns import fields, ints, or_zero
from sidecar.sinks.labelsets import Mapped
from sidecar.sinks.series import MAX_LABEL_LENGTH
from sidecar.sinks.window.sorted_values import Floats, SortedValues
from sidecar.sinks.window.view import (
    COUNTER_FIELDS,
    DIMENSIONS,
    Bools,
    Int8s,
    Int32s,
    KeysView,
    Rows,
    Section,
    Snapshot,
    UInt16s,
    sampled,
)
from sidecar.types import SEVERITIES, Batch

MAX_KEYS = 65_535  # keys are stored as uint16; near the cap new combinations fold into overflow keys
OVERFLOW = "__overflow__"
MAX_TOKENS = 2**32 - 1  # token columns are uint32; larger per-event counts are clamped
# Durations and costs (>= 0) are clamped to MAX_AMOUNT on the way in, so a sum of up to 10**18 of
# them stays finite (float64 tops out near 1.8e308): /v1/stats never meets an inf it cannot send.
MAX_AMOUNT = 1e290
INITIAL_CAPACITY = 1024  # store rows allocated up front (tests lower it)
FLUSH_EVENTS = 16_384  # pending events that trigger a flush from consume
# A batch smaller than this waits, as events, to be turned into columns with the next ones (at
# most until they reach it, or the next flush): the ~16 comprehensions and numpy calls of
# `_columns` cost ~40 us per batch, which a one-event batch from a quiet connection paid alone.
WAIT_BELOW = 256
MAX_RUN_HASHES = 4_000_000  # run ids remembered since start (8 bytes each) to count each run once

Combo = tuple[str, str | None, str | None, str | None, str | None, str | None, bool | None]  # ..., tool, severity, success (set once decoded)
Columns = dict[str, npt.NDArray[Any]]


def _cut(value: str | None) -> str | None:
    """Strings are kept as metric labels are (128 characters), so a long value costs no more."""
    return value if value is None or len(value) <= MAX_LABEL_LENGTH else value[:MAX_LABEL_LENGTH]


class Keys:
    """Interned combinations of (type, agent, workflow, model, tool, severity, failed).

    Per dimension, `names[dim]` lists the values and `of[dim][key]` gives a key's
    value index, so any breakdown or filter is an O(keys) numpy operation. Tables only
    grow (by new arrays) and entries below `len(self)` never change, so a snapshot is slices.
    """

    def __init__(self) -> None:
        self.ids: dict[Combo, int] = {}
        self.names: dict[str, list[str | None]] = {d: [] for d in DIMENSIONS}
        self.index: dict[str, dict[str | None, int]] = {d: {} for d in DIMENSIONS}
        self.of: dict[str, Int32s] = {d: np.zeros(64, dtype=np.int32) for d in DIMENSIONS}
        self.severity: Int8s = np.zeros(64, dtype=np.int8)
        self.failed: Bools = np.zeros(64, dtype=bool)
        self.overflowed = 0
        self.by_number = Mapped()  # a label-set number's key (sidecar.sinks.labelsets)

    def __len__(self) -> int:
        return len(self.ids)

    def intern(self, combo: Combo) -> int:
        """The key of a combination (type, agent, workflow, model, tool, severity, success) not yet seen."""
        if len(self.ids) >= MAX_KEYS - 2 * len(SEVERITIES):
            # Past the cap the labels fold into __overflow__, but severity and failure stay
            # (at most 10 overflow keys), so errors and severity counts remain exact.
            self.overflowed += 1
            folded: Combo = (OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW, combo[5], combo[6])
            key = self.ids.get(folded)
            return key if key is not None else self._add(folded)
        return self._add(combo)

    def _add(self, combo: Combo) -> int:
        type_, agent, workflow, model, tool, severity, success = combo
        key = len(self.ids)
        if key >= len(self.severity):
            # New arrays (np.resize), never a write below len(self): snapshots hold slices.
            size = len(self.severity) * 2
            for d in DIMENSIONS:
                self.of[d] = np.resize(self.of[d], size)
            self.severity = np.resize(self.severity, size)
            self.failed = np.resize(self.failed, size)
        for d, value in zip(DIMENSIONS, (agent, workflow, type_, model, tool)):
            index = self.index[d]
            i = index.get(value)
            if i is None:
                i = len(self.names[d])
                self.names[d].append(value)
                index[value] = i  # after the append: a reader never finds an index it cannot read
            self.of[d][key] = i
        self.severity[key] = SEVERITIES.index(severity)
        self.failed[key] = not success
        self.ids[combo] = key
        return key

    def view(self) -> KeysView:
        n = len(self.ids)
        return KeysView(
            n=n,
            of={d: self.of[d][:n] for d in DIMENSIONS},
            severity=self.severity[:n],
            failed=self.failed[:n],
            names=dict(self.names),
            n_names={d: len(self.names[d]) for d in DIMENSIONS},
            index=self.index,
        )


class Counters:
    """Per-key running sums for one window (or since start): one float64 row per key."""

    def __init__(self) -> None:
        self.table: Floats = np.zeros((64, len(COUNTER_FIELDS)), dtype=np.float64)

    def update(self, sign: int, rows: Columns, n_keys: int) -> None:
        key = rows["key"]
        if not len(key):
            return
        if n_keys > len(self.table):
            grown = np.zeros((max(n_keys, 2 * len(self.table)), len(COUNTER_FIELDS)), dtype=np.float64)
            grown[: len(self.table)] = self.table
            self.table = grown
        dur = rows["dur"]
        has = ~np.isnan(dur)
        columns = (None, has, np.where(has, dur, 0.0), rows["tin"], rows["tout"], rows["tother"], rows["cost"])
        if len(key) <= 512:
            # Small batches (a query's flush): one scatter-add of a (rows x fields) matrix.
            values = np.column_stack((np.ones(len(key)), *columns[1:]))
            np.add.at(self.table, key, values if sign > 0 else -values)
        else:
            # Large batches: bincount per field is ~10x faster per row than add.at.
            size = len(self.table)
            for i, weights in enumerate(columns):
                self.table[:, i] += sign * np.bincount(key, weights=weights, minlength=size)
        if sign < 0:
            # Adding then subtracting floats leaves dust (0.25 + 0.01 - 0.25 != 0.01); a key
            # with no events left has exactly zero of everything.
            self.table[self.table[:, 0] == 0] = 0.0

    def copy(self, n_keys: int) -> Floats:
        out = np.zeros((n_keys, len(COUNTER_FIELDS)), dtype=np.float64)
        have = min(n_keys, len(self.table))
        out[:have] = self.table[:have]
        return out

    def total(self, field: str) -> float:
        return float(self.table[:, COUNTER_FIELDS.index(field)].sum())


class IndexEntry:
    """One value of an indexed field (windows.index_by) in one window: its sorted durations
    and events per run id, so a filter on that value needs no pass over the rows."""

    __slots__ = ("values", "runs")

    def __init__(self) -> None:
        self.values = SortedValues()
        self.runs: dict[int, int] = {}


class Window:
    __slots__ = ("seconds", "name", "cutoff", "counters", "values", "runs", "distinct_runs", "index", "truncated")

    def __init__(self, seconds: float, index_by: tuple[str, ...] = ()):
        self.seconds = seconds
        self.name = format_duration(seconds)
        self.cutoff = -math.inf  # events with ts >= cutoff are in the window
        self.truncated = False  # windows.max_events made its oldest events leave early
        self.counters = Counters()
        self.values = SortedValues()
        self.runs: Int32s = np.zeros(1024, dtype=np.int32)  # events per interned run id in this window
        self.distinct_runs = 0
        self.index: dict[str, dict[int, IndexEntry]] = {d: {} for d in index_by}

    def count_runs(self, runs: Int32s, sign: int) -> None:
        runs = runs[runs >= 0]
        if not len(runs):
            return
        counts: npt.NDArray[np.int64] | None
        if len(runs) > 512:
            ids, counts = np.unique(runs, return_counts=True)  # add.at is slow per row
        else:
            ids = np.fromiter(set(runs.tolist()), dtype=np.int64)
            counts = None
        if sign > 0:
            self.distinct_runs += int(np.count_nonzero(self.runs[ids] == 0))
        if counts is None:
            np.add.at(self.runs, runs, sign)
        else:
            self.runs[ids] += sign * counts.astype(np.int32)
        if sign < 0:
            self.distinct_runs -= int(np.count_nonzero(self.runs[ids] == 0))


class RunHashes:
    """Hashes of every run id seen since start (up to MAX_RUN_HASHES), so a run that leaves
    the windows and comes back is still counted once since start. A sorted uint64 array plus
    a small set of recent ones, folded in when it grows: 8 bytes per run."""

    def __init__(self) -> None:
        self.sorted: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self.recent: set[int] = set()

    def __len__(self) -> int:
        return len(self.sorted) + len(self.recent)

    def add_new(self, names: list[str]) -> int:
        """Remember these run ids; how many of them were not seen before."""
        hashes = np.array([hash(n) & 0xFFFF_FFFF_FFFF_FFFF for n in names], dtype=np.uint64)
        if len(self.sorted):
            pos = np.minimum(self.sorted.searchsorted(hashes), len(self.sorted) - 1)
            hashes = hashes[self.sorted[pos] != hashes]
        new = 0
        for h in hashes.tolist():
            if h not in self.recent:
                if len(self) >= MAX_RUN_HASHES:
                    new += 1  # past the cap a run coming back may be counted again (documented)
                    continue
                self.recent.add(h)
                new += 1
        if len(self.recent) > max(65_536, len(self.sorted) >> 5):
            merged = np.concatenate((self.sorted, np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))))
            merged.sort()
            self.sorted, self.recent = merged, set()
        return new


# The store's columns: 42 bytes per event.
COLUMNS = {
    "ts": np.float64, "dur": np.float64, "key": np.uint16, "run": np.int32,
    "tin": np.uint32, "tout": np.uint32, "tother": np.uint32, "cost": np.float64,
}


def _tokens(column: Floats) -> npt.NDArray[np.uint32]:
    """A count column (NaN: none, counted 0), clamped to MAX_TOKENS."""
    column = or_zero(column)  # counts are at most contract.MAX_COUNT: exact as floats
    if len(column) and column.max() > MAX_TOKENS:
        column = np.minimum(column, MAX_TOKENS)
    return column.astype(np.uint32)


def _amounts(column: Floats) -> Floats:
    """An amount column (NaN: no value), clamped to MAX_AMOUNT. Amounts are >= 0 (the event
    contract), so one NaN-ignoring max decides whether a clamping pass is needed."""
    if len(column) and np.fmax.reduce(column) > MAX_AMOUNT:
        column = np.minimum(column, MAX_AMOUNT)  # NaN stays NaN
    return column


class WindowStore:
    """Rows, windows, counters and samples; every method runs on the one writer thread."""

    def __init__(self, config: WindowsConfig, now: float):
        self.config = config
        self.windows = [Window(s, tuple(config.index_by)) for s in sorted(config.durations)]
        self.largest = self.windows[-1]
        self.keys = Keys()
        self.run_ids: dict[str | None, int] = {None: -1}
        self.run_names: list[str | None] = []
        self._free_runs: list[int] = []
        self._run_candidates: list[Int32s] = []
        self._run_hashes = RunHashes()
        self.runs_seen = 0
        self.late = 0
        self.level = 0  # duration samples keep 1 in 2**level rows (0: every row, exact)
        self.started = now
        # Restored from a snapshot saved before a crash (sinks/window/persist.py): events from the
        # save to the restart may be missing, so a window covering this time is not exact until
        # it has left it.
        self.gap_until = -math.inf
        self.cols: Columns = {c: np.empty(INITIAL_CAPACITY, dtype=t) for c, t in COLUMNS.items()}
        self.head = 0
        self.tail = 0
        # For a copy made in slices across loop turns (persist.SlicedCopy): row i of the arrays is
        # row number i + shifted for as long as it is stored (moves to the front add to shifted),
        # and rewritten_from is the lowest row number an out-of-order insert rewrote since the
        # copier last set it to inf.
        self.shifted = 0
        self.rewritten_from: float = math.inf
        self._waiting: list[Batch] = []  # small batches, not in columns yet (WAIT_BELOW)
        self._waiting_n = 0
        self._waiting_numbers: list[int] = []  # their label-set numbers
        self._pending: list[Columns] = []  # column chunks of consumed, unfiled events
        self._pending_n = 0
        self.total = Counters()
        size = config.cumulative_samples
        self._res_dur: Floats = np.empty(size, dtype=np.float64)
        self._res_key: UInt16s = np.empty(size, dtype=np.uint16)
        self._res_n = 0
        self._seen_durations = 0
        self._rng = np.random.default_rng(0x5EED)

    # -- the hot path -------------------------------------------------------

    def consume(self, batch: Batch, now: float, numbers: list[int]) -> None:
        """`numbers`: the batch's label-set numbers (sidecar.sinks.labelsets)."""
        # Columns are made soon, while the events are still in the CPU cache: done at flush
        # time, 16k cold events cost a cache miss per field. Filing is done in bulk.
        late_cut = now - self.largest.seconds
        n = len(batch.events)
        if n < WAIT_BELOW or self._waiting:
            self.late += sum(1 for ev in batch.events if ev.timestamp < late_cut)  # type: ignore[operator,misc]  # epoch seconds once decoded
            self._waiting.append(batch)
            self._waiting_n += n
            self._waiting_numbers += numbers
            if self._waiting_n < WAIT_BELOW:
                return
            self._columns_of_waiting()
        else:
            self._pending.append(self._columns([batch], late_cut, numbers))
            self._pending_n += n
        if self._pending_n >= FLUSH_EVENTS:
            self.flush(now, fold=True)

    def _columns_of_waiting(self) -> None:
        waiting, self._waiting, self._waiting_n = self._waiting, [], 0
        numbers, self._waiting_numbers = self._waiting_numbers, []
        self._pending.append(self._columns(waiting, -math.inf, numbers))  # their late ones were counted in consume
        self._pending_n += len(numbers)

    def _columns(self, batches: list[Batch], late_cut: float, numbers: list[int]) -> Columns:
        """Batches as typed columns; interns keys and run ids; counts late events."""
        evs = batches[0].events if len(batches) == 1 else [e for b in batches for e in b.events]
        ts = fields(batches, "timestamp", evs)
        self.late += int(np.count_nonzero(ts < late_cut))
        keys = self.keys.by_number.ids(numbers)
        if len(keys) and keys.min() < 0:
            combos = self.keys.ids
            for i in np.flatnonzero(keys < 0).tolist():
                e = evs[i]
                key = combos.get((e.type, e.agent, e.workflow, e.model, e.tool, e.severity, e.success))
                if key is None:
                    combo: Combo = (e.type[:MAX_LABEL_LENGTH], _cut(e.agent), _cut(e.workflow), _cut(e.model), _cut(e.tool), e.severity, e.success)
                    key = combos.get(combo)
                    if key is None:
                        key = self.keys.intern(combo)
                        if combos.get(combo) != key:  # folded into an overflow key: looked up (and counted) each time
                            keys[i] = key
                            continue
                keys[i] = key
                self.keys.by_number.note(numbers[i], key)
        runs = self._run_numbers([e.run_id for e in evs])
        return {
            "ts": ts,
            "dur": _amounts(fields(batches, "duration_ms", evs)),
            "key": keys.astype(np.uint16),
            "run": ints(runs).astype(np.int32),
            "tin": _tokens(fields(batches, "input_tokens", evs)),
            "tout": _tokens(fields(batches, "output_tokens", evs)),
            "tother": _tokens(fields(batches, "tokens", evs)),
            "cost": _amounts(or_zero(fields(batches, "cost_usd", evs))),
        }

    def _run_numbers(self, idents: list[str | None]) -> list[int]:
        """Each event's interned run id (-1: none), interning the ones not seen yet. A run's events
        mostly arrive together, so most batches start runs: the new ids are found by set operations
        in C, not by a loop over the events (which cost 50 ns per event, BENCHMARKS.md)."""
        run_ids = self.run_ids
        new: list[str] = [ident for ident in dict.fromkeys(idents) if ident not in run_ids]  # type: ignore[misc]  # None is in run_ids
        cut: dict[str | None, int] = {}  # ids over MAX_LABEL_LENGTH, interned under their first 128 characters
        if new:
            names: list[str] = []
            for ident in new:
                name: str = _cut(ident)  # type: ignore[assignment]  # a str in, a str out
                rid = run_ids.get(name)
                if rid is None:
                    rid = self._intern_run(name)
                    names.append(name)
                if name is not ident:
                    cut[ident] = rid
            self.runs_seen += self._run_hashes.add_new(names)
        runs: list[int] = list(map(run_ids.get, idents))  # type: ignore[arg-type]  # every id is in run_ids or cut
        if cut:
            runs = [cut[ident] if rid is None else rid for ident, rid in zip(idents, runs)]
        return runs

    def _intern_run(self, run_id: str) -> int:
        if self._free_runs:
            rid = self._free_runs.pop()
            self.run_names[rid] = run_id
        else:
            rid = len(self.run_names)
            self.run_names.append(run_id)
            if rid >= len(self.largest.runs):
                for w in self.windows:
                    grown = np.zeros(len(w.runs) * 2, dtype=np.int32)
                    grown[: len(w.runs)] = w.runs
                    w.runs = grown
        self.run_ids[run_id] = rid
        return rid

    # -- moving pending events into the store ------------------------------

    def flush(self, now: float, fold: bool = False) -> None:
        """Evict what left each window by `now` and file every consumed event. Snapshots pass
        fold=False: the O(n) fold of the sorted buffers is left to ingest (consume, maintain)
        unless they grew 4x."""
        if self._waiting:
            self._columns_of_waiting()
        self._advance(now)
        if self._pending:
            self._merge()
        if self._run_candidates:
            self._release_runs()
        self._check_level()
        for w in self.windows:
            w.values.maybe_fold(1 if fold else 4)
            for entries in w.index.values():
                for entry in entries.values():
                    entry.values.maybe_fold(1 if fold else 4)

    def _rows(self, lo: int, hi: int) -> Columns:
        return {c: a[lo:hi] for c, a in self.cols.items()}

    def _start(self, w: Window) -> int:
        """Index of the first stored row inside window w."""
        return self.head + int(np.searchsorted(self.cols["ts"][self.head : self.tail], w.cutoff, "left"))

    def _advance(self, now: float) -> None:
        live_ts = self.cols["ts"][self.head : self.tail]
        # Memory bound: past windows.max_events stored events, the oldest leave every window early
        # (those windows then answer exact: false), so a high rate cannot grow the store without end.
        excess = len(live_ts) - self.config.max_events
        floor = float(live_ts[excess]) if excess > 0 else -math.inf
        for w in self.windows:
            cutoff = max(now - w.seconds, floor)
            w.truncated = max(cutoff, w.cutoff) > now - w.seconds  # until the window catches up
            if cutoff <= w.cutoff:
                continue  # a clock that steps back never re-admits events
            lo = self.head + int(np.searchsorted(live_ts, w.cutoff, "left"))
            hi = self.head + int(np.searchsorted(live_ts, cutoff, "left"))
            w.cutoff = cutoff
            if hi > lo:
                self._apply(w, self._rows(lo, hi), -1)
        hi = self.head + int(np.searchsorted(live_ts, self.largest.cutoff, "left"))
        if hi > self.head:
            self._run_candidates.append(self.cols["run"][self.head : hi].copy())
            self.head = hi

    def _apply(self, w: Window, rows: Columns, sign: int) -> None:
        w.counters.update(sign, rows, len(self.keys))
        w.count_runs(rows["run"], sign)
        keep = sampled(rows["ts"], rows["dur"], self.level)
        values = rows["dur"][keep]
        if sign > 0:
            w.values.add(values)
        else:
            w.values.remove(values)
        if w.index:
            self._apply_index(w, rows, keep, sign, runs=True)

    def _apply_index(self, w: Window, rows: Columns, keep_all: Bools, sign: int, runs: bool) -> None:
        """Split rows by each indexed field's value (one radix sort) and update each value's entry."""
        for dim, entries in w.index.items():
            group = np.take(self.keys.of[dim], rows["key"]).astype(np.uint16)
            order = np.argsort(group, kind="stable")
            group = group[order]
            starts = np.flatnonzero(np.diff(group)) + 1
            starts_l = [0, *starts.tolist()]
            ends_l = [*starts.tolist(), len(group)]
            dur, keep, run = rows["dur"][order], keep_all[order], rows["run"][order]
            for g, lo, hi in zip(group[starts_l].tolist() if len(group) else [], starts_l, ends_l):
                entry = entries.get(g)
                if entry is None:
                    entry = entries[g] = IndexEntry()
                values = dur[lo:hi][keep[lo:hi]]
                if sign > 0:
                    entry.values.add(values)
                else:
                    entry.values.remove(values)
                if runs:
                    counts = entry.runs
                    ids = run[lo:hi]
                    ids = ids[ids >= 0]
                    pairs = Counter(ids.tolist()).items() if len(ids) <= 512 else zip(*(a.tolist() for a in np.unique(ids, return_counts=True)))
                    for rid, n in pairs:
                        left = counts.get(rid, 0) + sign * n
                        if left:
                            counts[rid] = left
                        else:
                            del counts[rid]
                if sign < 0 and not len(entry.values) and not entry.runs:
                    del entries[g]  # the value left the window: do not keep an empty entry

    def _pending_rows(self) -> Columns:
        pending, self._pending, self._pending_n = self._pending, [], 0
        if len(pending) == 1:
            return pending[0]
        return {c: np.concatenate([chunk[c] for chunk in pending]) for c in pending[0]}

    def _merge(self) -> None:
        rows = self._pending_rows()
        self.total.update(1, rows, len(self.keys))
        self._sample_cumulative(rows["dur"], rows["key"])
        ts = rows["ts"]
        keep = ts >= self.largest.cutoff
        if not keep.all():
            self._run_candidates.append(rows["run"][~keep])
            rows = {c: a[keep] for c, a in rows.items()}
            ts = rows["ts"]
        if not len(ts):
            return
        order = np.argsort(ts, kind="stable")
        rows = {c: a[order] for c, a in rows.items()}
        ts = rows["ts"]
        self._insert(rows)
        for w in self.windows:
            start = int(np.searchsorted(ts, w.cutoff, "left"))
            if start < len(ts):
                self._apply(w, {c: a[start:] for c, a in rows.items()}, 1)

    def _insert(self, rows: Columns) -> None:
        """Put time-sorted rows into the store, keeping it sorted by ts."""
        n = len(rows["ts"])
        self._reserve(n)
        cols, h, t = self.cols, self.head, self.tail
        if t == h or rows["ts"][0] >= cols["ts"][t - 1]:
            for c, a in rows.items():
                cols[c][t : t + n] = a
        else:
            # Out of order: re-merge only the suffix of the store newer than the oldest new row.
            k = h + int(np.searchsorted(cols["ts"][h:t], rows["ts"][0], "right"))
            self.rewritten_from = min(self.rewritten_from, k + self.shifted)
            merged_ts = np.concatenate((cols["ts"][k:t], rows["ts"]))
            order = np.argsort(merged_ts, kind="stable")
            for c, a in rows.items():
                cols[c][k : t + n] = np.concatenate((cols[c][k:t], a))[order]
        self.tail = t + n

    def _reserve(self, n: int) -> None:
        cap = len(self.cols["ts"])
        if self.tail + n <= cap:
            return
        live = self.tail - self.head
        if live + n <= cap // 2:
            for a in self.cols.values():
                a[:live] = a[self.head : self.tail]
        else:
            # Untouched pages of np.empty are not resident, so slack costs address space only.
            size = max(INITIAL_CAPACITY, (live + n) * 5 // 4)
            for c, a in self.cols.items():
                grown = np.empty(size, dtype=a.dtype)
                grown[:live] = a[self.head : self.tail]
                self.cols[c] = grown
        self.shifted += self.head
        self.head, self.tail = 0, live

    def _release_runs(self) -> None:
        """Forget run ids no longer in the largest window (pending is empty here)."""
        ids = np.unique(np.concatenate(self._run_candidates))
        self._run_candidates = []
        ids = ids[ids >= 0]
        for rid in ids[self.largest.runs[ids] == 0].tolist():
            name = self.run_names[rid]
            if name is not None and self.run_ids.get(name) == rid:
                del self.run_ids[name]
                self.run_names[rid] = None
                self._free_runs.append(rid)

    def _sample_cumulative(self, dur: Floats, key: UInt16s) -> None:
        """Reservoir sampling (algorithm R) of every duration since start."""
        has = ~np.isnan(dur)
        dur, key = dur[has], key[has]
        size = len(self._res_dur)
        room = min(size - self._res_n, len(dur))
        if room > 0:
            self._res_dur[self._res_n : self._res_n + room] = dur[:room]
            self._res_key[self._res_n : self._res_n + room] = key[:room]
            self._res_n += room
            self._seen_durations += room
            dur, key = dur[room:], key[room:]
        if len(dur):
            seen = self._seen_durations + np.arange(1, len(dur) + 1)
            slot = (self._rng.random(len(dur)) * seen).astype(np.int64)
            take = slot < size
            self._res_dur[slot[take]] = dur[take]
            self._res_key[slot[take]] = key[take]
            self._seen_durations += len(dur)

    def _check_level(self) -> None:
        """Keep the duration samples of the largest window at most windows.max_samples."""
        limit = self.config.max_samples
        have = int(self.largest.counters.total("durations"))
        level = self.level
        while (have >> level) > limit:
            level += 1
        while level > 0 and (have >> (level - 1)) <= limit // 2:
            level -= 1
        while True:
            if level != self.level:
                self.level = level
                self._rebuild_values()
            if len(self.largest.values) <= limit:
                return
            level += 1  # the hash sample came out above its expectation

    def _rebuild_values(self) -> None:
        ts = self.cols["ts"][self.head : self.tail]
        dur = self.cols["dur"][self.head : self.tail]
        for w in self.windows:
            start = int(np.searchsorted(ts, w.cutoff, "left"))
            keep = sampled(ts[start:], dur[start:], self.level)
            w.values = SortedValues(dur[start:][keep])
            if w.index:
                for entries in w.index.values():
                    for entry in entries.values():
                        entry.values = SortedValues()
                rows = self._rows(self.head + start, self.tail)
                self._apply_index(w, rows, keep, 1, runs=False)

    # -- snapshots ----------------------------------------------------------

    def snapshot(
        self, now: float, windows: Sequence[Window], rows: bool, cumulative: bool,
        indexed: tuple[str, str] | None = None, copy: bool = True,
    ) -> Snapshot:
        """A consistent read-only view as of `now` (every consumed event filed first).

        rows: include each window's rows (for filters and groups). copy: make them copies, for
        a reader on another thread; without it they are slices, valid until the next change.
        indexed: (field, value) of a filter on an indexed field, whose samples to include.
        """
        self.flush(now)
        n_keys = len(self.keys)
        keys = self.keys.view()

        def own(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return a.copy() if copy else a

        sections = []
        for w in windows:
            window_rows = None
            if rows:
                start = self._start(w)
                window_rows = Rows(
                    key=own(self.cols["key"][start : self.tail]),
                    dur=own(self.cols["dur"][start : self.tail]),
                    run=own(self.cols["run"][start : self.tail]),
                    ts=own(self.cols["ts"][start : self.tail]) if self.level else None,
                    level=self.level,
                )
            entry_view = None
            if indexed is not None and indexed[0] in w.index:
                dim, value = indexed
                g = keys.name_index(dim, value)
                entry = w.index[dim].get(g) if g is not None else None
                entry_view = (entry.values.snapshot(), len(entry.runs)) if entry else (SortedValues(), 0)
            sections.append(Section(
                name=w.name, seconds=w.seconds, exact=self.level == 0 and not w.truncated and now - w.seconds >= self.gap_until,
                counters=w.counters.copy(n_keys), values=w.values.snapshot(), runs=w.distinct_runs,
                rows=window_rows, indexed=entry_view,
            ))
        since_start = None
        if cumulative:
            n = self._res_n
            since_start = Section(
                name="cumulative", seconds=now - self.started, exact=self._seen_durations <= len(self._res_dur),
                counters=self.total.copy(n_keys), values=None, runs=self.runs_seen,
                rows=Rows(key=own(self._res_key[:n]), dur=own(self._res_dur[:n]), run=None, ts=None, level=0),
            )
        return Snapshot(
            now=now, started=self.started, keys=keys, windows=tuple(sections), cumulative=since_start,
            late=self.late, overflowed=self.keys.overflowed,
        )
