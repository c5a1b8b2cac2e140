"""Label-set tables with a cardinality cap and expiry; their numbers in numpy columns by row.

A table maps each label set to a row. The numbers of every series sit in arrays indexed by row,
so the metrics sink adds a whole batch with a few numpy calls (`np.add.at`) instead of touching
one Python float per event: at the cap, ~2,400 scattered float objects rebound per batch cost
more in memory traffic than the additions themselves. Rows of expired series are reused.

A scrape copies the rows it shows under the sink's lock (`snapshot`, a few array copies) and
formats them after it (`render`). Each table keeps the text it rendered last, by row, with the
numbers it showed, so a scrape formats again only the series that changed since the previous one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from sidecar.sinks.exposition import Exemplars, HistogramNames, histogram_series, label_block, scalar_line, split_block

MAX_LABEL_LENGTH = 128
OVERFLOW = "__overflow__"
_FIRST_ROWS = 16

Key = tuple[str, ...]


def _grown(array: np.ndarray, rows: int, fill: object) -> np.ndarray:
    new = np.full((rows, *array.shape[1:]), fill, dtype=array.dtype)
    new[: len(array)] = array
    return new


def _exemplars(traces: np.ndarray, spans: np.ndarray, values: np.ndarray, times: np.ndarray) -> Exemplars | None:
    """One series' exemplars by bucket, from its row of the four exemplar columns."""
    found = traces.tolist()
    if not any(t is not None for t in found):
        return None
    span, value, time = spans.tolist(), values.tolist(), times.tolist()
    return {i: (t, span[i], value[i], None if time[i] != time[i] else time[i]) for i, t in enumerate(found) if t is not None}


@dataclass
class ScalarSnapshot:
    """What a scrape shows of a counter or gauge, copied under the sink's lock."""

    rows: np.ndarray  # the rows shown, in exposition order
    generations: np.ndarray  # of those rows: a row reused for a new series has a new one
    values: np.ndarray
    blocks: list[str]  # by row (the whole list: a C-level copy)


@dataclass
class HistogramSnapshot(ScalarSnapshot):
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    heads: list[str] = field(default_factory=list)
    tails: list[str] = field(default_factory=list)
    # trace, span, value and time columns of the shown rows; OpenMetrics only
    exemplars: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclass
class _Shown:
    """The text a table rendered last, by row, and the numbers it was rendered from."""

    generations: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # the value's (or sum's) bits
    counts: np.ndarray | None = None
    lines: list[str] = field(default_factory=list)

    def cover(self, rows: int, buckets: int | None) -> None:
        if buckets is not None and self.counts is None:
            self.counts = np.zeros((0, buckets), np.int64)
        if len(self.generations) < rows:
            self.generations = _grown(self.generations, rows, 0)
            self.bits = _grown(self.bits, rows, 0)
            if self.counts is not None:
                self.counts = _grown(self.counts, rows, 0)
            self.lines.extend([""] * (rows - len(self.lines)))

    def stale(self, snap: ScalarSnapshot, counts: np.ndarray | None = None) -> np.ndarray:
        """Which shown rows changed since they were rendered: a new series on the row, a new
        value (bit for bit), or new bucket counts."""
        rows = snap.rows
        changed: np.ndarray = (self.generations[rows] != snap.generations) | (self.bits[rows] != snap.values.view(np.int64))
        if counts is not None and self.counts is not None:
            changed |= (self.counts[rows] != counts).any(axis=1)
        return changed

    def keep(self, snap: ScalarSnapshot, stale: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Note the numbers the `stale` rows were just rendered from."""
        changed = snap.rows[stale]
        self.generations[changed] = snap.generations[stale]
        self.bits[changed] = snap.values.view(np.int64)[stale]
        if counts is not None and self.counts is not None:
            self.counts[changed] = counts[stale]


class Cell:
    """One series of a table, for code off the hot path (and tests): reads and writes its row."""

    __slots__ = ("table", "row")

    def __init__(self, table: SeriesTable, row: int) -> None:
        self.table = table
        self.row = row

    @property
    def value(self) -> float:
        return float(self.table.values[self.row])

    @value.setter
    def value(self, value: float) -> None:
        self.table.values[self.row] = value


class HistogramCell(Cell):
    """A histogram series: non-cumulative bucket counts (the last is +Inf), its sum (the row's
    `value`) and the latest exemplar per bucket."""

    __slots__ = ()
    table: HistogramTable

    @property
    def counts(self) -> np.ndarray:
        view: np.ndarray = self.table.counts[self.row]  # item assignment writes through
        return view

    @counts.setter
    def counts(self, counts: list[int]) -> None:
        self.table.counts[self.row] = counts

    @property
    def sum(self) -> float:
        return self.value

    @sum.setter
    def sum(self, value: float) -> None:
        self.value = value

    @property
    def exemplars(self) -> Exemplars | None:
        return self.table.exemplars_of(self.row)

    @exemplars.setter
    def exemplars(self, found: Exemplars | None) -> None:
        table, row = self.table, self.row
        table.clear_exemplars(row)
        for bucket, (trace_id, span_id, value, ts) in (found or {}).items():
            table.keep_exemplar(row, bucket, trace_id, span_id, value, ts)
        table.generations[row] += 1  # the numbers may not have changed: render this series again


class SeriesTable:
    """One counter or gauge: `rows[label tuple] -> row`, its number in `values[row]`.

    New label sets are truncated to MAX_LABEL_LENGTH per value; beyond `cap` series they are
    folded into one series whose labels are all `__overflow__`. Expiry keeps no per-update
    timestamp (that would cost the hot path): `sweep` notes which rows changed since its
    previous call and drops those unchanged for the TTL.

    Arrays grow by doubling, so a row index outlives growth but an array reference does not:
    read `table.values` after creating rows, not before.
    """

    def __init__(self, name: str, labelnames: tuple[str, ...], cap: int):
        self.name = name
        self.labelnames = labelnames
        self.cap = cap
        self.rows: dict[Key, int] = {}
        self.keys: list[Key | None] = []  # by row; None for a free row
        self.blocks: list[str] = []  # by row: the label set as the exposition writes it
        self.overflowed = 0  # label sets folded into the overflow series
        self.expired = 0
        self._overflow_key = (OVERFLOW,) * len(labelnames)
        self._free: list[int] = []
        self.values = np.zeros(_FIRST_ROWS)
        self.generations = np.zeros(_FIRST_ROWS, np.int64)  # bumped whenever a row starts a series
        self._seen = np.full(_FIRST_ROWS, np.nan)  # version at the last sweep
        self._touched = np.full(_FIRST_ROWS, np.nan)  # when a sweep last saw it change; NaN: never swept
        self._render_lock = threading.Lock()
        self._shown: dict[bool, _Shown] = {}

    # -- rows ------------------------------------------------------------------

    def row(self, key: Key) -> int:
        """The row for a label set, created through the guard if it is new."""
        row = self.rows.get(key)
        if row is not None:
            return row
        if any(len(v) > MAX_LABEL_LENGTH for v in key):
            key = tuple(v[:MAX_LABEL_LENGTH] for v in key)
            row = self.rows.get(key)
            if row is not None:
                return row
        if len(self.rows) >= self.cap and key != self._overflow_key:
            self.overflowed += 1
            key = self._overflow_key
            row = self.rows.get(key)
            if row is not None:
                return row
        if self._free:
            row = self._free.pop()
        else:
            row = len(self.keys)
            if row == len(self.values):
                self._grow(2 * row)
            self.keys.append(None)
            self.blocks.append("")
            self._append_row()
        self.keys[row] = key
        self.blocks[row] = label_block(self.labelnames, key)
        self._label_row(row, key)
        self.generations[row] += 1
        self.rows[key] = row
        return row

    def cell(self, key: Key) -> Cell:
        return Cell(self, self.row(key))

    def add(self, key: Key, amount: float) -> None:
        row = self.row(key)
        self.values[row] += amount

    def _grow(self, rows: int) -> None:
        self.values = _grown(self.values, rows, 0.0)
        self.generations = _grown(self.generations, rows, 0)
        self._seen = _grown(self._seen, rows, np.nan)
        self._touched = _grown(self._touched, rows, np.nan)

    def _append_row(self) -> None:
        pass

    def _label_row(self, row: int, key: Key) -> None:
        pass

    def _free_row(self, row: int) -> None:
        key = self.keys[row]
        assert key is not None
        del self.rows[key]
        self.keys[row] = None
        self.values[row] = 0.0
        self._seen[row] = self._touched[row] = np.nan
        self._free.append(row)

    # -- expiry ------------------------------------------------------------------

    def versions(self) -> np.ndarray:
        """A number per row that changes whenever the series does."""
        return self.values[: len(self.keys)]

    def sweep(self, now: float, ttl: float, keep_nonzero: bool = False) -> int:
        """Record which series changed since the last sweep; drop those unchanged for `ttl`
        (with `keep_nonzero`, gauges only once back at zero). Returns how many were dropped."""
        n = len(self.keys)
        live = np.zeros(n, bool)
        live[list(self.rows.values())] = True
        version = self.versions()
        seen, touched = self._seen[:n], self._touched[:n]
        changed = live & ((version != seen) | np.isnan(touched))  # NaN != NaN: a NaN always changes, as before
        seen[changed] = version[changed]
        touched[changed] = now
        old = live & (touched < now - ttl)
        if keep_nonzero:
            old &= version == 0
        gone = np.flatnonzero(old).tolist()
        for row in gone:
            self._free_row(row)
        self.expired += len(gone)
        return len(gone)

    # -- exposition ------------------------------------------------------------------

    def _shown_rows(self) -> np.ndarray:
        return np.fromiter(self.rows.values(), np.intp, len(self.rows))

    def snapshot(self, openmetrics: bool) -> ScalarSnapshot:
        """What a scrape needs, copied: call under the sink's lock."""
        rows = self._shown_rows()
        return ScalarSnapshot(rows, self.generations[rows], self.values[rows], self.blocks.copy())

    def render(self, snap: ScalarSnapshot, sample: str) -> list[str]:
        """Each shown series' sample line under the name `sample` (fixed for a table), formatted
        again only where the row's series or value changed since the previous render."""
        with self._render_lock:
            shown = self._shown.setdefault(False, _Shown())
            shown.cover(len(snap.blocks), None)
            stale = shown.stale(snap)
            rows, lines, blocks, values = snap.rows, shown.lines, snap.blocks, snap.values.tolist()
            for i in np.flatnonzero(stale).tolist():
                row = int(rows[i])
                lines[row] = scalar_line(sample, blocks[row], values[i])
            shown.keep(snap, stale)
            return [lines[row] for row in rows.tolist()]


class HistogramTable(SeriesTable):
    """A histogram: `values[row]` is the sum, `counts[row]` the non-cumulative bucket counts
    (the last is +Inf), and per bucket the latest exemplar in four columns."""

    def __init__(self, name: str, labelnames: tuple[str, ...], cap: int, n_buckets: int):
        self.width = n_buckets + 1
        self.counts = np.zeros((_FIRST_ROWS, self.width), np.int64)
        self.ex_trace = np.full((_FIRST_ROWS, self.width), None, object)
        self.ex_span = np.full((_FIRST_ROWS, self.width), None, object)
        self.ex_value = np.zeros((_FIRST_ROWS, self.width))
        self.ex_time = np.full((_FIRST_ROWS, self.width), np.nan)  # NaN: no timestamp
        super().__init__(name, labelnames, cap)
        # The bucket lines put `le` among the labels, sorted by name as prometheus_client does.
        self.heads: list[str] = []
        self.tails: list[str] = []

    def cell(self, key: Key) -> HistogramCell:
        return HistogramCell(self, self.row(key))

    def _grow(self, rows: int) -> None:
        super()._grow(rows)
        self.counts = _grown(self.counts, rows, 0)
        self.ex_trace = _grown(self.ex_trace, rows, None)
        self.ex_span = _grown(self.ex_span, rows, None)
        self.ex_value = _grown(self.ex_value, rows, 0.0)
        self.ex_time = _grown(self.ex_time, rows, np.nan)

    def _append_row(self) -> None:
        self.heads.append("")
        self.tails.append("")

    def _label_row(self, row: int, key: Key) -> None:
        self.heads[row], self.tails[row] = split_block(self.labelnames, key)

    def _free_row(self, row: int) -> None:
        super()._free_row(row)
        self.counts[row] = 0
        self.clear_exemplars(row)

    def clear_exemplars(self, row: int) -> None:
        self.ex_trace[row] = self.ex_span[row] = None

    def keep_exemplar(self, row: int, bucket: int, trace_id: str, span_id: str | None, value: float, ts: float | None) -> None:
        self.ex_trace[row, bucket] = trace_id
        self.ex_span[row, bucket] = span_id
        self.ex_value[row, bucket] = value
        self.ex_time[row, bucket] = np.nan if ts is None else ts

    def exemplars_of(self, row: int) -> Exemplars | None:
        return _exemplars(self.ex_trace[row], self.ex_span[row], self.ex_value[row], self.ex_time[row])

    def versions(self) -> np.ndarray:
        n = len(self.keys)
        version: np.ndarray = self.values[:n] + self.counts[:n].sum(axis=1)
        return version

    def snapshot(self, openmetrics: bool) -> HistogramSnapshot:
        rows = self._shown_rows()
        exemplars = (self.ex_trace[rows], self.ex_span[rows], self.ex_value[rows], self.ex_time[rows]) if openmetrics else None
        return HistogramSnapshot(
            rows, self.generations[rows], self.values[rows], self.blocks.copy(), self.counts[rows],
            self.heads.copy(), self.tails.copy(), exemplars,
        )

    def render_histogram(self, snap: HistogramSnapshot, names: HistogramNames, openmetrics: bool) -> list[str]:
        """Each shown series' lines, formatted again only where its counts or sum changed.
        An exemplar is written only with a count, so counts and sum decide for both formats."""
        with self._render_lock:
            shown = self._shown.setdefault(openmetrics, _Shown())
            shown.cover(len(snap.blocks), self.width)
            stale = shown.stale(snap, snap.counts)
            rows, lines, sums, ex = snap.rows, shown.lines, snap.values.tolist(), snap.exemplars
            for i in np.flatnonzero(stale).tolist():
                row = int(rows[i])
                lines[row] = histogram_series(
                    names, snap.blocks[row], snap.heads[row], snap.tails[row], snap.counts[i].tolist(), sums[i],
                    None if ex is None else _exemplars(ex[0][i], ex[1][i], ex[2][i], ex[3][i]), openmetrics,
                )
            shown.keep(snap, stale, snap.counts)
            return [lines[row] for row in rows.tolist()]
