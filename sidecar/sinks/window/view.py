"""What a query or a scrape reads: a consistent, read-only snapshot of the window store.

The store (the only writer, on the pipeline's thread) builds one with `WindowStore.snapshot`.
Nothing in a snapshot is written after it is made: per-key counters are copies, sorted
multisets share arrays that the store never writes in place, and key tables are slices of
arrays the store only appends to. Rows are copies when the snapshot will be read on another
thread, and plain slices when it is read at once on the writer's own thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sidecar.sinks.window.sorted_values import Floats, Ints, SortedValues

UInt16s = npt.NDArray[np.uint16]
Int32s = npt.NDArray[np.int32]
Int8s = npt.NDArray[np.int8]
Bools = npt.NDArray[np.bool_]

DIMENSIONS = ("agent", "workflow", "type", "model", "tool")
COUNTER_FIELDS = ("events", "durations", "duration_sum", "input", "output", "other", "cost")
FIELD = {f: i for i, f in enumerate(COUNTER_FIELDS)}


@dataclass(frozen=True, slots=True)
class KeysView:
    """The interned key table as of the snapshot: `of[dim][key]` is an index into `names[dim]`."""

    n: int
    of: dict[str, Int32s]
    severity: Int8s
    failed: Bools
    names: Mapping[str, Sequence[str | None]]  # append-only lists: indices below n_names[dim] never change
    n_names: dict[str, int]
    index: dict[str, dict[str | None, int]]  # value -> name index; entries are only ever added

    def name_index(self, dim: str, value: str | None) -> int | None:
        i = self.index[dim].get(value)
        return i if i is not None and i < self.n_names[dim] else None

    def matching(self, filters: dict[str, str]) -> Ints | None:
        """The keys matching every filter (None when there are none: every key)."""
        if not filters:
            return None
        mask = np.ones(self.n, dtype=bool)
        for dim, value in filters.items():
            i = self.name_index(dim, value)
            if i is None:
                return np.empty(0, dtype=np.int64)
            mask &= self.of[dim] == i
        return np.flatnonzero(mask)


@dataclass(frozen=True, slots=True)
class Rows:
    """Stored rows, one entry per event: interned key, duration (NaN: none), run id (-1: none).

    `ts` is given when only a hash sample of the durations counts (`level` > 0: keep 1 in
    2**level); None means every duration is a sample. `run` is None where runs are not kept.
    """

    key: UInt16s
    dur: Floats
    run: Int32s | None
    ts: Floats | None
    level: int
    filtered: bool = False  # already restricted to the query's filters (see query.detach)


@dataclass(frozen=True, slots=True)
class Section:
    """One window (or the since-start section) as of the snapshot."""

    name: str
    seconds: float
    exact: bool
    counters: Floats  # (keys, COUNTER_FIELDS) running sums per key
    values: SortedValues | None  # the window's sorted duration samples (None: since start)
    runs: int | None  # distinct run ids among the section's events (None: not known)
    rows: Rows | None  # present when the query reads rows (filters, groups, since start)
    indexed: tuple[SortedValues, int] | None = None  # (samples, distinct runs) of one indexed filter value

    def per_key(self, field: str) -> Floats:
        return self.counters[:, FIELD[field]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a /v1/stats document or a scrape reads, as of `now`."""

    now: float
    started: float
    keys: KeysView
    windows: tuple[Section, ...]
    cumulative: Section | None
    late: int
    overflowed: int


def sampled(ts: Floats | None, dur: Floats, level: int) -> Bools:
    """Which rows carry a duration sample at sampling level `level` (keep 1 in 2**level).

    The choice is a hash of the row's own (timestamp, duration), so the sample is the
    same whenever it is recomputed and needs no storage.
    """
    has: Bools = ~np.isnan(dur)
    if level == 0 or ts is None:
        return has
    h = ts.view(np.uint64) ^ (dur.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    keep: Bools = has & ((h & np.uint64((1 << level) - 1)) == 0)
    return keep
