"""Label-set tables with a cardinality cap and expiry, shared by the metric families."""

from __future__ import annotations

from typing import Any

MAX_LABEL_LENGTH = 128
OVERFLOW = "__overflow__"


class SeriesTable:
    """`values[label tuple] -> value` plus the last time each series was updated.

    New label sets are truncated to MAX_LABEL_LENGTH per value; beyond `cap` series
    they are folded into one series whose labels are all `__overflow__`.
    """

    __slots__ = ("name", "labelnames", "cap", "values", "touched", "overflowed", "expired", "_overflow_key")

    def __init__(self, name: str, labelnames: tuple[str, ...], cap: int):
        self.name = name
        self.labelnames = labelnames
        self.cap = cap
        self.values: dict[tuple[str, ...], Any] = {}
        self.touched: dict[tuple[str, ...], float] = {}
        self.overflowed = 0  # events folded into the overflow series
        self.expired = 0
        self._overflow_key = (OVERFLOW,) * len(labelnames)

    def admit(self, key: tuple[str, ...], events: int) -> tuple[str, ...]:
        """The key to store a new label set under (called only when `key` is not present)."""
        if any(len(v) > MAX_LABEL_LENGTH for v in key):
            key = tuple(v[:MAX_LABEL_LENGTH] for v in key)
            if key in self.values:
                return key
        if len(self.values) >= self.cap and key != self._overflow_key:
            self.overflowed += events
            return self._overflow_key
        return key

    def add(self, key: tuple[str, ...], amount: float, events: int, now: float) -> None:
        values = self.values
        if key not in values:
            key = self.admit(key, events)
        values[key] = values.get(key, 0) + amount
        self.touched[key] = now

    def expire(self, cutoff: float, keep_nonzero: bool = False) -> None:
        """Drop series last updated before `cutoff` (gauges: only those at zero)."""
        stale = [k for k, t in self.touched.items() if t < cutoff]
        for key in stale:
            if keep_nonzero and self.values.get(key):
                continue
            del self.touched[key]
            self.values.pop(key, None)
            self.expired += 1
