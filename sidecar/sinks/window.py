"""The window sink: exact statistics over sliding windows of event time.

Layout (all numpy, so memory is a few machine words per event, not Python objects):

* a **store** of the events inside the largest window, sorted by event timestamp,
  one typed column per field (ts, duration, interned key, run id, tokens, cost).
  Every window is then a suffix of the store: `[searchsorted(ts, now - w), end)`.
* per window, **running counters per key** (a key is one interned combination of
  type, agent, workflow, model, severity and failure): events, durations, tokens
  and cost, added when events enter the window and subtracted when they leave, so
  every count and sum (filtered or not) is O(keys), independent of the event count.
* per window, a **sorted multiset of durations** (`SortedValues`): a sorted array
  plus small sorted buffers of pending inserts and deletes, folded in when they
  grow. Exact nearest-rank quantiles are a vectorised binary search, not a sort.

`consume` only keeps the batch (the hot path); `flush` extracts typed columns and files
them in bulk: at 16,384 pending events, on `maintain` (about once a second), and before
every query and scrape, which take the same short lock, so they see every consumed event.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from sidecar.config import WindowsConfig, format_duration, parse_duration
from sidecar.types import SEVERITIES, Batch, Event

DIMENSIONS = ("agent", "workflow", "type", "model")
PERCENTILES = (50, 90, 95, 99)
MAX_KEYS = 65_535  # keys are stored as uint16; near the cap new combinations fold into overflow keys
OVERFLOW = "__overflow__"
MAX_TOKENS = 2**32 - 1  # token columns are uint32; larger per-event counts are clamped
INITIAL_CAPACITY = 1024  # store rows allocated up front (tests lower it)
FLUSH_EVENTS = 16_384  # pending events that trigger a flush from consume
_EMPTY = np.empty(0, dtype=np.float64)


def nearest_rank(percent: int, n: int) -> int:
    """1-based rank of the nearest-rank percentile: the smallest r with r >= percent/100 * n."""
    return max(1, -(-percent * n // 100))


class SortedValues:
    """A multiset of floats: a sorted array S plus sorted pending adds A and deletes D.

    The live multiset is S + A - D (D is always a sub-multiset of S + A). Folding the
    buffers into S is O(n) (two sorted runs merge in linear time), done when they grow
    past ~3% of S, so each change costs O(1) amortised element moves.
    """

    __slots__ = ("s", "a", "d")
    FOLD_MIN = 8192  # pending changes always allowed before folding (tests lower it)

    def __init__(self, values: np.ndarray = _EMPTY):
        self.s = np.sort(values)
        self.a = _EMPTY
        self.d = _EMPTY

    def __len__(self) -> int:
        return len(self.s) + len(self.a) - len(self.d)

    def add(self, values: np.ndarray) -> None:
        if len(values):
            self.a = _insert_sorted(self.a, values)

    def remove(self, values: np.ndarray) -> None:
        if len(values):
            self.d = _insert_sorted(self.d, values)

    def maybe_fold(self, slack: int = 1) -> None:
        """Fold the buffers into S once they pass slack x (~3% of S)."""
        if len(self.a) + len(self.d) > slack * max(self.FOLD_MIN, len(self.s) >> 5):
            self.fold()

    def fold(self) -> None:
        merged = _merge(self.s, self.a) if len(self.a) else self.s
        if len(self.d):
            merged = _remove_sorted(merged, self.d)
        self.s, self.a, self.d = merged, _EMPTY, _EMPTY

    def select(self, ranks: np.ndarray) -> np.ndarray:
        """The values at these 1-based ranks (each in 1..len(self))."""
        s, a, d = self.s, self.a, self.d
        if not len(a) and not len(d):
            return s[ranks - 1]
        ns, na, nd = len(s), len(a), len(d)

        def count_le(v: np.ndarray) -> np.ndarray:
            """Live values <= v. (ndarray methods: a third of np.searchsorted's call cost.)"""
            n = s.searchsorted(v, "right")
            if na:
                n += a.searchsorted(v, "right")
            if nd:
                n -= d.searchsorted(v, "right")
            return n

        # 1. In S: the smallest index i with count_le(S[i]) >= rank. Since
        #    i+1-|D| <= count_le(S[i]) <= #S<=S[i] + |A|, it lies in a range |A|+|D| wide.
        if ns:
            floor = ranks - 1 - na
            lo = s.searchsorted(s[np.clip(floor, 0, ns - 1)], "left")
            lo[floor >= ns] = ns
        else:
            lo = np.zeros(len(ranks), dtype=np.int64)
        hi = np.minimum(ranks - 1 + nd, ns)
        # Branch-free binary lifting: grow lo by each power of two while S[lo + step - 1]
        # is still short of the rank (a fixed number of rounds, few numpy calls each).
        width = int((hi - lo).max()) if len(ranks) else 0
        step = 1 << max(width.bit_length() - 1, 0) if width else 0
        last_index = max(ns - 1, 0)
        while step:
            probe = lo + (step - 1)
            short = (probe < hi) & (count_le(s[np.minimum(probe, last_index)]) < ranks)
            lo += short * step
            step >>= 1
        found = lo < ns
        best = np.where(found, s[np.minimum(lo, max(ns - 1, 0))] if ns else np.inf, np.inf)
        if not na:
            return best
        # 2. In A: a better answer must lie strictly above S[i-1] (whose count is short of
        #    the rank) and at most S[i]; usually no element of A is in that gap.
        below = np.where(lo > 0, s[np.maximum(lo - 1, 0)] if ns else -np.inf, -np.inf)
        first = np.searchsorted(a, below, "right")
        last = np.searchsorted(a, best, "right")
        for j in np.flatnonzero(last > first).tolist():
            candidates = a[first[j] : last[j]]
            k = int(np.searchsorted(count_le(candidates), ranks[j], "left"))
            if k < len(candidates):
                best[j] = candidates[k]
        return best


def _merge(sorted_a: np.ndarray, values: np.ndarray) -> np.ndarray:
    """sorted_a and values (any order) as one sorted array; timsort merges the runs in O(n)."""
    out = np.concatenate((sorted_a, values))
    out.sort(kind="stable")
    return out


def _insert_sorted(sorted_a: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Like _merge, but a few values go in by memmove instead of a pass of comparisons."""
    if len(values) * 8 > len(sorted_a):
        return _merge(sorted_a, values)
    values = np.sort(values)
    return np.insert(sorted_a, np.searchsorted(sorted_a, values), values)


def _remove_sorted(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Remove the sorted multiset d from the sorted array s (d must be contained in s)."""
    pos = np.searchsorted(s, d, "left")
    # Equal values in d must remove distinct copies: offset each by its rank in its run.
    pos += np.arange(len(d)) - np.searchsorted(d, d, "left")
    keep = np.ones(len(s), dtype=bool)
    keep[pos] = False
    return s[keep]


def _sampled(ts: np.ndarray, dur: np.ndarray, level: int) -> np.ndarray:
    """Which rows carry a duration sample at sampling level `level` (keep 1 in 2**level).

    The choice is a hash of the row's own (timestamp, duration), so the sample is the
    same whenever it is recomputed and needs no storage.
    """
    has = ~np.isnan(dur)
    if level == 0:
        return has
    h = ts.view(np.uint64) ^ (dur.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return has & ((h & np.uint64((1 << level) - 1)) == 0)


class Keys:
    """Interned combinations of (type, agent, workflow, model, severity, failed).

    Per dimension, `names[dim]` lists the values and `of[dim][key]` gives a key's
    value index, so any breakdown or filter is an O(keys) numpy operation.
    """

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}
        self.names: dict[str, list[str | None]] = {d: [] for d in DIMENSIONS}
        self.index: dict[str, dict[str | None, int]] = {d: {} for d in DIMENSIONS}
        self.of: dict[str, np.ndarray] = {d: np.zeros(64, dtype=np.int32) for d in DIMENSIONS}
        self.severity = np.zeros(64, dtype=np.int8)
        self.failed = np.zeros(64, dtype=bool)
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self.ids)

    def intern(self, combo: tuple) -> int:
        """The key of a combination (type, agent, workflow, model, severity, success) not yet seen."""
        if len(self.ids) >= MAX_KEYS - 2 * len(SEVERITIES):
            # Past the cap the labels fold into __overflow__, but severity and failure stay
            # (at most 10 overflow keys), so errors and severity counts remain exact.
            self.overflowed += 1
            folded = (OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW, combo[4], combo[5])
            key = self.ids.get(folded)
            return key if key is not None else self._add(folded)
        return self._add(combo)

    def _add(self, combo: tuple) -> int:
        type_, agent, workflow, model, severity, success = combo
        key = len(self.ids)
        self.ids[combo] = key
        if key >= len(self.severity):
            size = len(self.severity) * 2
            for d in DIMENSIONS:
                self.of[d] = np.resize(self.of[d], size)
            self.severity = np.resize(self.severity, size)
            self.failed = np.resize(self.failed, size)
        for d, value in zip(DIMENSIONS, (agent, workflow, type_, model)):
            index = self.index[d]
            i = index.get(value)
            if i is None:
                i = index[value] = len(self.names[d])
                self.names[d].append(value)
            self.of[d][key] = i
        self.severity[key] = SEVERITIES.index(severity)
        self.failed[key] = not success
        return key

    def mask(self, filters: dict[str, str]) -> np.ndarray | None:
        """Boolean mask over keys matching every filter (None when there are none)."""
        if not filters:
            return None
        mask = np.ones(len(self.ids), dtype=bool)
        for dim, value in filters.items():
            i = self.index[dim].get(value)
            if i is None:
                return np.zeros(len(self.ids), dtype=bool)
            mask &= self.of[dim][: len(self.ids)] == i
        return mask


class Counters:
    """Per-key running sums for one window (or since start): one float64 row per key."""

    FIELDS = ("events", "durations", "duration_sum", "input", "output", "other", "cost")
    _INDEX = {f: i for i, f in enumerate(FIELDS)}

    def __init__(self) -> None:
        self.table = np.zeros((64, len(self.FIELDS)), dtype=np.float64)

    def update(self, sign: int, rows: dict[str, np.ndarray], n_keys: int) -> None:
        key = rows["key"]
        if not len(key):
            return
        if n_keys > len(self.table):
            grown = np.zeros((max(n_keys, 2 * len(self.table)), len(self.FIELDS)), dtype=np.float64)
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

    def per_key(self, field: str, n_keys: int) -> np.ndarray:
        column = self.table[:, self._INDEX[field]]
        if len(column) < n_keys:
            return np.concatenate((column, np.zeros(n_keys - len(column))))
        return column[:n_keys]

    def total(self, field: str) -> float:
        return float(self.table[:, self._INDEX[field]].sum())


class _Index:
    """One value of an indexed field (windows.index_by) in one window: its sorted durations
    and events per run id, so a filter on that value needs no pass over the rows."""

    __slots__ = ("values", "runs")

    def __init__(self) -> None:
        self.values = SortedValues()
        self.runs: dict[int, int] = {}


class _Window:
    __slots__ = ("seconds", "name", "cutoff", "counters", "values", "runs", "distinct_runs", "index", "truncated")

    def __init__(self, seconds: float, index_by: tuple[str, ...] = ()):
        self.seconds = seconds
        self.name = format_duration(seconds)
        self.cutoff = -math.inf  # events with ts >= cutoff are in the window
        self.truncated = False  # windows.max_events made its oldest events leave early
        self.counters = Counters()
        self.values = SortedValues()
        self.runs = np.zeros(1024, dtype=np.int32)  # events per interned run id in this window
        self.distinct_runs = 0
        self.index: dict[str, dict[int, _Index]] = {d: {} for d in index_by}

    def count_runs(self, runs: np.ndarray, sign: int) -> None:
        runs = runs[runs >= 0]
        if not len(runs):
            return
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


# The store's columns: 42 bytes per event.
COLUMNS = {
    "ts": np.float64, "dur": np.float64, "key": np.uint16, "run": np.int32,
    "tin": np.uint32, "tout": np.uint32, "tother": np.uint32, "cost": np.float64,
}


class WindowSink:
    """Exact sliding-window statistics, queried by `/v1/stats` and exported as gauges.

    Only the pipeline calls `consume`/`maintain`; `stats` (route handlers, on the
    loop) and `collect` (a scrape, in a worker thread) take the same short lock.
    """

    name = "window"

    def __init__(self, config: WindowsConfig, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self.windows = [_Window(s, tuple(config.index_by)) for s in sorted(config.durations)]
        self.largest = self.windows[-1]
        self.keys = Keys()
        self.run_ids: dict[str | None, int] = {None: -1}
        self.run_names: list[str | None] = []
        self._free_runs: list[int] = []
        self._run_candidates: list[np.ndarray] = []
        self.runs_seen = 0
        self.late = 0
        self.level = 0  # duration samples keep 1 in 2**level rows (0: every row, exact)
        self.started = self.clock()
        self.cols = {c: np.empty(INITIAL_CAPACITY, dtype=t) for c, t in COLUMNS.items()}
        self.head = 0
        self.tail = 0
        self._pending: list[dict[str, np.ndarray]] = []  # column chunks of consumed, unfiled events
        self._pending_n = 0
        self.total = Counters()
        size = config.cumulative_samples
        self._res_dur = np.empty(size, dtype=np.float64)
        self._res_key = np.empty(size, dtype=np.uint16)
        self._res_n = 0
        self._seen_durations = 0
        self._rng = np.random.default_rng(0x5EED)
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    # -- the hot path -------------------------------------------------------

    def consume(self, batch: Batch) -> None:
        # Columns are extracted with one comprehension per field (several times cheaper than
        # appending field by field) right away, while the batch is still in the CPU cache: done
        # at flush time, 16k cold events cost a cache miss per field. Filing is done in bulk.
        late_cut = self.clock() - self.largest.seconds
        with self._lock:
            self._pending.append(self._columns(batch.events, late_cut))
            self._pending_n += len(batch.events)
            if self._pending_n >= FLUSH_EVENTS:
                self._flush(self.clock(), fold=True)

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
        self.runs_seen += 1
        return rid

    # -- moving pending events into the store ------------------------------

    async def start(self) -> None:
        pass  # the store lives in memory and is built in __init__

    async def close(self) -> None:
        pass

    def maintain(self, now: float) -> None:
        with self._lock:
            self._flush(now, fold=True)

    def flush(self, now: float | None = None) -> None:
        """Evict what left each window by `now` and file every consumed event."""
        with self._lock:
            self._flush(self.clock() if now is None else now, fold=True)

    def _flush(self, now: float, fold: bool = False) -> None:
        """File pending events as of `now`. Queries pass fold=False: the O(n) fold of the
        sorted buffers is left to the ingest side (consume, maintain) unless they grew 4x."""
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

    def _rows(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        return {c: a[lo:hi] for c, a in self.cols.items()}

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

    def _apply(self, w: _Window, rows: dict[str, np.ndarray], sign: int) -> None:
        w.counters.update(sign, rows, len(self.keys))
        w.count_runs(rows["run"], sign)
        sampled = _sampled(rows["ts"], rows["dur"], self.level)
        values = rows["dur"][sampled]
        if sign > 0:
            w.values.add(values)
        else:
            w.values.remove(values)
        if w.index:
            self._apply_index(w, rows, sampled, sign, runs=True)

    def _apply_index(self, w: _Window, rows: dict[str, np.ndarray], sampled: np.ndarray, sign: int, runs: bool) -> None:
        """Split rows by each indexed field's value (one radix sort) and update each value's entry."""
        for dim, entries in w.index.items():
            group = np.take(self.keys.of[dim], rows["key"]).astype(np.uint16)
            order = np.argsort(group, kind="stable")
            group = group[order]
            starts = np.flatnonzero(np.diff(group)) + 1
            starts_l = [0, *starts.tolist()]
            ends_l = [*starts.tolist(), len(group)]
            dur, keep, run = rows["dur"][order], sampled[order], rows["run"][order]
            for g, lo, hi in zip(group[starts_l].tolist() if len(group) else [], starts_l, ends_l):
                entry = entries.get(g)
                if entry is None:
                    entry = entries[g] = _Index()
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

    def _pending_rows(self) -> dict[str, np.ndarray]:
        pending, self._pending, self._pending_n = self._pending, [], 0
        if len(pending) == 1:
            return pending[0]
        return {c: np.concatenate([chunk[c] for chunk in pending]) for c in pending[0]}

    def _columns(self, evs: list[Event], late_cut: float) -> dict[str, np.ndarray]:
        """A batch as typed columns; interns keys and run ids; counts late events."""
        ts = np.array([e.timestamp for e in evs], dtype=np.float64)
        self.late += int(np.count_nonzero(ts < late_cut))
        combos = self.keys.ids
        keys = [combos.get((e.type, e.agent, e.workflow, e.model, e.severity, e.success)) for e in evs]
        if None in keys:
            for i, k in enumerate(keys):
                if k is None:
                    e = evs[i]
                    combo = (e.type, e.agent, e.workflow, e.model, e.severity, e.success)
                    keys[i] = combos.get(combo)
                    if keys[i] is None:
                        keys[i] = self.keys.intern(combo)
        get_run = self.run_ids.get
        runs = [get_run(e.run_id, -2) for e in evs]
        if -2 in runs:
            for i, rid in enumerate(runs):
                if rid == -2:
                    name = evs[i].run_id
                    runs[i] = get_run(name, -2)
                    if runs[i] == -2:
                        runs[i] = self._intern_run(name)

        def tokens(values: list[int]) -> np.ndarray:
            column = np.array(values, dtype=np.float64)  # float first: ints past 2**64 convert too
            if len(column) and column.max() > MAX_TOKENS:
                column = np.minimum(column, MAX_TOKENS)
            return column.astype(np.uint32)

        return {
            "ts": ts,
            "dur": np.array([e.duration_ms for e in evs], dtype=np.float64),  # None -> NaN
            "key": np.array(keys, dtype=np.uint16),
            "run": np.array(runs, dtype=np.int32),
            "tin": tokens([e.input_tokens or 0 for e in evs]),
            "tout": tokens([e.output_tokens or 0 for e in evs]),
            "tother": tokens([e.tokens or 0 for e in evs]),
            "cost": np.array([e.cost_usd or 0.0 for e in evs], dtype=np.float64),
        }

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

    def _insert(self, rows: dict[str, np.ndarray]) -> None:
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
            for c, a in self.cols.items():
                a[:live] = a[self.head : self.tail]
        else:
            # Untouched pages of np.empty are not resident, so slack costs address space only.
            size = max(INITIAL_CAPACITY, (live + n) * 5 // 4)
            for c, a in self.cols.items():
                grown = np.empty(size, dtype=a.dtype)
                grown[:live] = a[self.head : self.tail]
                self.cols[c] = grown
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

    def _sample_cumulative(self, dur: np.ndarray, key: np.ndarray) -> None:
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
            sampled = _sampled(ts[start:], dur[start:], self.level)
            w.values = SortedValues(dur[start:][sampled])
            if w.index:
                for entries in w.index.values():
                    for entry in entries.values():
                        entry.values = SortedValues()
                rows = self._rows(self.head + start, self.tail)
                self._apply_index(w, rows, sampled, 1, runs=False)

    # -- queries --------------------------------------------------------------

    def window_names(self) -> list[str]:
        return [w.name for w in self.windows]

    def find_window(self, text: str) -> _Window | None:
        for w in self.windows:
            if w.name == text:
                return w
        try:
            seconds = parse_duration(float(text) if text.replace(".", "", 1).isdigit() else text)
        except ValueError:
            return None
        return next((w for w in self.windows if w.seconds == seconds), None)

    def stats(self, window: str | None = None, filters: dict[str, str] | None = None, by: str | None = None, limit: int = 50) -> dict[str, Any]:
        """The /v1/stats document. `window` must be a configured window name (see find_window)."""
        filters = filters or {}
        with self._lock:
            now = self.clock()
            self._flush(now)
            as_of = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if window is not None:
                w = self.find_window(window)
                if w is None:
                    raise KeyError(window)
                return self._window_doc(w, filters, by, limit, as_of)
            return {
                "as_of": as_of,
                "windows": {w.name: self._window_doc(w, filters, by, limit) for w in self.windows},
                "cumulative": self._cumulative_doc(now, filters, by, limit),
            }

    def _window_doc(self, w: _Window, filters: dict[str, str], by: str | None, limit: int, as_of: str | None = None) -> dict[str, Any]:
        head: dict[str, Any] = {"window": w.name, "window_seconds": _number(w.seconds)}
        if as_of is not None:
            head["as_of"] = as_of
        exact = self.level == 0 and not w.truncated
        head["exact"] = exact
        kmask = self.keys.mask(filters)
        ts = self.cols["ts"][self.head : self.tail]
        start = self.head + int(np.searchsorted(ts, w.cutoff, "left"))
        rows = self._rows(start, self.tail)
        indexed = by is None and len(filters) == 1 and next(iter(filters)) in w.index
        if (kmask is None and by is None) or indexed:
            if indexed:
                (dim, value), = filters.items()
                g = self.keys.index[dim].get(value)
                entry = w.index[dim].get(g) if g is not None else None
                source, runs = (entry.values, len(entry.runs)) if entry else (SortedValues(), 0)
            else:
                source, runs = w.values, w.distinct_runs
            n = len(source)
            values = source.select(_ranks(n)) if n else None
            doc = self._doc(w.counters, kmask, values, n, runs, w.seconds)
            if not exact:
                doc["sample_size"] = n
            return head | doc
        return head | self._rows_doc(w.counters, kmask, rows["key"], rows["dur"], rows["ts"], rows["run"], w.seconds, by, limit, exact)

    def _cumulative_doc(self, now: float, filters: dict[str, str], by: str | None, limit: int) -> dict[str, Any]:
        seconds = now - self.started
        exact = self._seen_durations <= len(self._res_dur)
        head: dict[str, Any] = {"window": "cumulative", "window_seconds": seconds, "exact": exact}
        kmask = self.keys.mask(filters)
        dur = self._res_dur[: self._res_n]
        key = self._res_key[: self._res_n]
        runs = self.runs_seen if kmask is None and by is None else None
        doc = self._rows_doc(self.total, kmask, key, dur, None, None, seconds, by, limit, exact)
        if runs is not None:
            doc["workflows_active"] = runs
        return head | doc

    def _rows_doc(
        self, counters: Counters, kmask: np.ndarray | None, key: np.ndarray, dur: np.ndarray, ts: np.ndarray | None,
        run: np.ndarray | None, seconds: float, by: str | None, limit: int, exact: bool,
    ) -> dict[str, Any]:
        """Statistics read off rows (with filters, groups, or since start); counts come from counters.

        `ts` is given for store rows (to tell sampled durations apart); None means every
        row carries a sample (the cumulative reservoir).
        """
        nk = len(self.keys)
        if kmask is not None:
            idx = np.flatnonzero(np.take(kmask, key))  # one pass; then gathers, cheaper than 4 masks
            dur = dur.take(idx)
            key = key.take(idx) if by is not None else key
            ts = None if ts is None else ts.take(idx) if self.level else ts  # level 0 reads only dur
            run = None if run is None else run.take(idx)
        sampled = None if ts is None else _sampled(ts, dur, self.level)
        values = dur if sampled is None else dur[sampled]
        doc = self._doc(counters, kmask, _at_ranks(values), len(values), None if run is None else _distinct(run), seconds)
        if not exact:
            doc["sample_size"] = len(values)
        if by is None:
            return doc
        names = self.keys.names[by]
        group_of = self.keys.of[by][:nk]
        events = counters.per_key("events", nk)
        per_group = np.bincount(group_of, weights=events if kmask is None else events * kmask, minlength=len(names))
        chosen = sorted(np.flatnonzero(per_group > 0).tolist(), key=lambda g: (-per_group[g], str(names[g])))[:limit]
        # One stable sort of the rows by group (a radix sort on uint16), then a slice per group.
        row_group = np.take(group_of.astype(np.uint16), key)
        order = np.argsort(row_group, kind="stable")
        sorted_groups = row_group[order]
        groups = []
        for g in chosen:
            gmask = group_of == g
            if kmask is not None:
                gmask &= kmask
            idx = order[np.searchsorted(sorted_groups, g, "left") : np.searchsorted(sorted_groups, g, "right")]
            gvalues = dur[idx] if sampled is None else dur[idx[sampled[idx]]]
            gdoc = self._doc(counters, gmask, _at_ranks(gvalues), len(gvalues), None if run is None else _distinct(run[idx]), seconds)
            if not exact:
                gdoc["sample_size"] = len(gvalues)
            groups.append({"key": names[g]} | gdoc)
        doc["by"] = by
        doc["groups"] = groups
        return doc

    def _doc(self, counters: Counters, kmask: np.ndarray | None, values: np.ndarray | None, n_values: int, runs: int | None, seconds: float) -> dict[str, Any]:
        """One window's (or group's) fields; `values` are min, p50, p90, p95, p99, max of the samples."""
        nk = len(self.keys)
        keys = self.keys

        def per_key(field: str) -> np.ndarray:
            a = counters.per_key(field, nk)
            return a if kmask is None else np.where(kmask, a, 0.0)

        events_k = per_key("events")
        events = int(events_k.sum())
        by_type = np.bincount(keys.of["type"][:nk], weights=events_k, minlength=len(keys.names["type"]))
        by_sev = np.bincount(keys.severity[:nk], weights=events_k, minlength=len(SEVERITIES))
        errors = int(events_k[keys.failed[:nk]].sum())
        by_agent = np.bincount(keys.of["agent"][:nk], weights=events_k, minlength=len(keys.names["agent"]))
        no_agent = keys.index["agent"].get(None)
        agents = int(np.count_nonzero(by_agent)) - (no_agent is not None and bool(by_agent[no_agent] > 0))
        count = int(per_key("durations").sum())
        total = float(per_key("duration_sum").sum())
        tin, tout, tother = (int(per_key(f).sum()) for f in ("input", "output", "other"))
        tokens = tin + tout + tother
        cost = float(per_key("cost").sum())
        duration: dict[str, Any] = {"count": count, "sum": total, "avg": total / count if count else None}
        if values is None or not n_values:
            duration |= {"min": None, "max": None} | {f"p{p}": None for p in PERCENTILES}
        else:
            v = values.tolist()
            duration |= {"min": v[0], "max": v[-1]} | {f"p{p}": x for p, x in zip(PERCENTILES, v[1:-1])}
        rate = (lambda x: x / seconds) if seconds > 0 else (lambda x: None)
        return {
            "events": events,
            "events_by_type": {keys.names["type"][i]: int(by_type[i]) for i in np.flatnonzero(by_type).tolist()},
            "events_by_severity": {SEVERITIES[i]: int(by_sev[i]) for i in np.flatnonzero(by_sev).tolist()},
            "errors": errors,
            "error_rate": errors / events if events else None,
            "duration_ms": duration,
            "tokens": {"input": tin, "output": tout, "total": tokens},
            "cost_usd": cost,
            "rates": {
                "events_per_second": rate(events),
                "tokens_per_second": rate(tokens),
                "cost_per_hour_usd": None if seconds <= 0 else cost / seconds * 3600,
            },
            "agents_active": agents,
            "workflows_active": runs,
        }

    # -- exposition -----------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # families are built at scrape time

    def collect(self) -> Iterator[Metric]:
        by_dims = tuple(self.config.prometheus_by)
        blank = [""] * len(by_dims)
        # Typed "summary" (quantiles over a sliding window are what a Prometheus summary is), so
        # tools accept the `quantile` label; no _count/_sum, as a window's count goes down.
        quantiles = _Quantiles(
            "agent_window_duration_seconds",
            "Exact nearest-rank quantile of event durations over the sliding window (NaN when empty)."
            + (f" Series with {'/'.join(by_dims)} set cover one value; empty ones the whole window." if by_dims else ""),
            labels=["window", "quantile", *by_dims],
        )
        events = GaugeMetricFamily("agent_window_events", "Events whose timestamp is inside the sliding window.", labels=["window", *by_dims])
        samples = GaugeMetricFamily(
            "sidecar_window_samples", "Duration samples held for the window's quantiles (fewer than events past windows.max_samples).", labels=["window"]
        )
        snapshots = []
        with self._lock:
            self._flush(self.clock())
            for w in self.windows:
                n = len(w.values)
                values = w.values.select(_ranks(n)).tolist() if n else [math.nan] * (len(PERCENTILES) + 2)
                for p, v in zip(PERCENTILES, values[1:-1]):
                    quantiles.add_metric([w.name, str(p / 100), *blank], v / 1000.0)
                events.add_metric([w.name, *blank], w.counters.total("events"))
                samples.add_metric([w.name], n)
                if by_dims:
                    snapshots.append((w, self._snapshot(w)))
            late = self.late
            overflowed = self.keys.overflowed
            if by_dims:
                nk = len(self.keys)
                group_of = {d: (self.keys.of[d][:nk].copy(), list(self.keys.names[d])) for d in by_dims}
        # Per-value quantiles need a pass over the window's rows: done on copies, outside the lock.
        for w, (key, dur, per_key_events) in snapshots:
            for i, dim in enumerate(by_dims):
                of, names = group_of[dim]
                for name, count, values in _top_groups(key, dur, of, names, per_key_events, self.config.prometheus_by_limit):
                    labels = blank[:i] + [name] + blank[i + 1 :]
                    events.add_metric([w.name, *labels], count)
                    for p, v in zip(PERCENTILES, values):
                        quantiles.add_metric([w.name, str(p / 100), *labels], v / 1000.0)
        yield quantiles
        yield events
        yield samples
        yield CounterMetricFamily(
            "sidecar_window_late_events", "Events older than the largest window when they arrived (ignored for windows, counted since start).", value=late
        )
        yield CounterMetricFamily(
            "sidecar_window_overflow_events",
            "Events whose type/agent/workflow/model combination was folded into __overflow__ (the window sink's key cap).",
            value=overflowed,
        )

    def _snapshot(self, w: _Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of a window's (key, sampled duration) rows and its per-key event counts."""
        ts = self.cols["ts"][self.head : self.tail]
        start = self.head + int(np.searchsorted(ts, w.cutoff, "left"))
        rows = self._rows(start, self.tail)
        sampled = _sampled(rows["ts"], rows["dur"], self.level)
        return rows["key"][sampled], rows["dur"][sampled], w.counters.per_key("events", len(self.keys)).copy()


class _Quantiles(Metric):
    """A summary family holding only quantile samples (add_metric like GaugeMetricFamily's)."""

    def __init__(self, name: str, documentation: str, labels: list[str]):
        super().__init__(name, documentation, "summary")
        self._labelnames = labels

    def add_metric(self, labels: list[str], value: float) -> None:
        self.add_sample(self.name, dict(zip(self._labelnames, labels)), value)


def _top_groups(key: np.ndarray, dur: np.ndarray, of: np.ndarray, names: list, per_key_events: np.ndarray, limit: int) -> Iterator[tuple[str, float, list[float]]]:
    """(value, events, [p50, p90, p95, p99] or NaNs) for the `limit` most active values of a field."""
    per_group = np.bincount(of, weights=per_key_events, minlength=len(names))
    chosen = [g for g in np.argsort(-per_group, kind="stable").tolist() if per_group[g] > 0 and names[g] is not None][:limit]
    row_group = np.take(of.astype(np.uint16), key)
    order = np.argsort(row_group, kind="stable")
    sorted_groups = row_group[order]
    for g in chosen:
        values = dur[order[np.searchsorted(sorted_groups, g, "left") : np.searchsorted(sorted_groups, g, "right")]]
        at = _at_ranks(values)
        yield names[g], float(per_group[g]), [math.nan] * len(PERCENTILES) if at is None else at[1:-1].tolist()


def _ranks(n: int) -> np.ndarray:
    """1-based ranks of min, p50, p90, p95, p99 and max among n values."""
    return np.array([1, *(nearest_rank(p, n) for p in PERCENTILES), n], dtype=np.int64)


def _at_ranks(values: np.ndarray) -> np.ndarray | None:
    """min, p50, p90, p95, p99, max of unsorted values by partial selection (no full sort)."""
    n = len(values)
    if not n:
        return None
    index = _ranks(n) - 1
    return np.partition(values, index)[index]


def _number(seconds: float) -> float | int:
    return int(seconds) if seconds == int(seconds) else seconds


def _distinct(runs: np.ndarray) -> int:
    """Distinct run ids (small interned ints; -1 is none): a bincount, no sort."""
    runs = runs[runs >= 0]
    return int(np.count_nonzero(np.bincount(runs))) if len(runs) else 0
