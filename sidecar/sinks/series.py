"""Label-set tables with a cardinality cap and expiry, shared by the metric families."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from sidecar.sinks.exposition import HistogramNames, histogram_series, label_block, scalar_line, split_block

MAX_LABEL_LENGTH = 128
OVERFLOW = "__overflow__"


# An exemplar as kept between scrapes: trace id, span id (W3C ids only), value and timestamp.
# Small on purpose: keeping the whole event would pin its longest strings per bucket and series.
ExemplarSample = tuple[str, str | None, float, float | None]


class Versioned(Protocol):
    def version(self) -> float: ...

    def set_labels(self, names: tuple[str, ...], values: tuple[str, ...]) -> None: ...


C = TypeVar("C", bound=Versioned)


class Cell:
    """One series' value. Mutable so the hot path can hold it instead of re-hashing labels.
    `block` is its label set as the exposition writes it, rendered once when the series is made.

    `line` keeps the last sample line written with the value object it shows: every update
    rebinds `value` to a new number, and while the kept tuple holds the old one it cannot be
    freed and its identity reused, so the same object means the same line."""

    __slots__ = ("block", "value", "_shown")

    def __init__(self) -> None:
        self.value = 0.0
        self.block = ""
        self._shown: tuple[float, str, str] | None = None  # (value, sample name, line)

    def version(self) -> float:
        return self.value

    def set_labels(self, names: tuple[str, ...], values: tuple[str, ...]) -> None:
        self.block = label_block(names, values)

    def line(self, sample: str) -> str:
        """This series' sample line under the name `sample`, formatted again only if the value changed."""
        value = self.value
        shown = self._shown
        if shown is not None and shown[0] is value and shown[1] == sample:
            return shown[2]
        text = scalar_line(sample, self.block, value)
        self._shown = (value, sample, text)
        return text


class HistogramCell:
    """Non-cumulative bucket counts (the last is +Inf), the sum, and the latest exemplar event per bucket.

    `lines` keeps the series' last rendered text with the counts and sum it was made from, so a
    scrape re-formats only the series that changed since the previous one. Every update adds 1
    to a bucket count and (then) rebinds `sum` to a new float: equal counts and the same `sum`
    object mean nothing changed. The exemplar is written before the count (`MetricsSink`), so a
    render that read the final counts also read the final exemplars."""

    __slots__ = ("block", "counts", "exemplars", "head", "sum", "tail", "_shown")

    def __init__(self, n_buckets: int) -> None:
        self.counts = [0] * (n_buckets + 1)
        self.sum = 0.0
        self.exemplars: dict[int, ExemplarSample] | None = None
        self.block = self.head = self.tail = ""
        # (counts, sum, openmetrics, text) of the last render: one tuple, so that two scrapes
        # rendering at once never pair one's key with the other's text; of atoms only, so the
        # garbage collector stops tracking it (at the cap, 10k fewer objects in every full pass).
        # The family's names are not in it: a sink's bucket bounds never change while it runs.
        self._shown: tuple[tuple[int, ...], float, bool, str] | None = None

    def version(self) -> float:
        return self.sum + sum(self.counts)

    def set_labels(self, names: tuple[str, ...], values: tuple[str, ...]) -> None:
        # The bucket lines put `le` among the labels, sorted by name as prometheus_client does.
        self.block = label_block(names, values)
        self.head, self.tail = split_block(names, values)

    def lines(self, names: HistogramNames, openmetrics: bool) -> str:
        """This series' exposition lines, re-formatted only if it changed since the last call.
        Reads without the sink's lock: tuple() and copy() are single C calls under the GIL, so
        the consumer cannot change them midway (the sum may trail the counts by the batch in
        flight, as prometheus_client's own Histogram allows; the next scrape then renders again)."""
        counts = tuple(self.counts)
        total = self.sum
        shown = self._shown
        if shown is not None and shown[1] is total and shown[0] == counts and shown[2] is openmetrics:
            return shown[3]
        exemplars = self.exemplars
        text = histogram_series(names, self.block, self.head, self.tail, counts, total, exemplars.copy() if exemplars else None, openmetrics)
        self._shown = (counts, total, openmetrics, text)
        return text


class SeriesTable(Generic[C]):
    """`cells[label tuple] -> Cell` for one metric.

    New label sets are truncated to MAX_LABEL_LENGTH per value; beyond `cap` series
    they are folded into one series whose labels are all `__overflow__`. Expiry keeps
    no per-update timestamp (that would cost the hot path): `sweep` notes which series
    changed since its previous call and drops those unchanged for the TTL.
    """

    __slots__ = ("name", "labelnames", "cap", "cells", "overflowed", "expired", "_new", "_overflow_key", "_seen", "_touched")

    def __init__(self, name: str, labelnames: tuple[str, ...], cap: int, new_cell: Callable[[], C]):
        self.name = name
        self.labelnames = labelnames
        self.cap = cap
        self.cells: dict[tuple[str, ...], C] = {}
        self.overflowed = 0  # label sets folded into the overflow series
        self.expired = 0
        self._new = new_cell
        self._overflow_key = (OVERFLOW,) * len(labelnames)
        self._seen: dict[tuple[str, ...], float] = {}  # version at the last sweep
        self._touched: dict[tuple[str, ...], float] = {}  # when a sweep last saw it change

    def cell(self, key: tuple[str, ...]) -> C:
        """The cell for a label set, created through the guard if it is new."""
        cell = self.cells.get(key)
        if cell is not None:
            return cell
        if any(len(v) > MAX_LABEL_LENGTH for v in key):
            key = tuple(v[:MAX_LABEL_LENGTH] for v in key)
            cell = self.cells.get(key)
            if cell is not None:
                return cell
        if len(self.cells) >= self.cap and key != self._overflow_key:
            self.overflowed += 1
            key = self._overflow_key
            cell = self.cells.get(key)
            if cell is not None:
                return cell
        cell = self.cells[key] = self._new()
        cell.set_labels(self.labelnames, key)
        return cell

    def add(self: SeriesTable[Cell], key: tuple[str, ...], amount: float) -> Cell:
        cell = self.cell(key)
        cell.value += amount
        return cell

    def sweep(self, now: float, ttl: float, keep_nonzero: bool = False) -> int:
        """Record which series changed since the last sweep; drop those unchanged for `ttl`
        (with `keep_nonzero`, gauges only once back at zero). Returns how many were dropped."""
        seen, touched = self._seen, self._touched
        for key, cell in self.cells.items():
            v = cell.version()
            if seen.get(key) != v:
                seen[key] = v
                touched[key] = now
        cutoff = now - ttl
        dropped = 0
        for key in [k for k, t in touched.items() if t < cutoff]:
            if keep_nonzero and self.cells[key].version():
                continue
            del touched[key], seen[key], self.cells[key]
            dropped += 1
        self.expired += dropped
        return dropped
