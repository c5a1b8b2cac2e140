"""Python lists to numpy columns, for the sinks' hot paths.

`np.array(a_list)` discovers and checks each item's type before converting it: ~25-45 ns per item
on the bench machine, and with ~15 columns per event it was a fifth of every sink's instructions
(callgrind, BENCHMARKS.md). `struct` packs a list of floats, or of ints, in one C loop at ~10 ns
per item. These take the struct path for lists of the kind they name, and numpy's for anything
else (None, an int past 64 bits), so the result is always what `np.array` gives. A short list goes
to numpy too: struct's setup (~1 us) is more than numpy's per-item cost below ~30 items.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sidecar.types import Batch

SHORT = 32


def floats(values: Sequence[float | None]) -> np.ndarray:
    """`np.array(values, dtype=np.float64)`, for a list of floats (ints convert, more slowly; None is NaN)."""
    packed = _packed(values, "d", np.float64)
    return np.array(values, dtype=np.float64) if packed is None else packed


def ints(values: Sequence[int]) -> np.ndarray:
    """`np.array(values, dtype=np.int64)`, for a list of ints (or bools)."""
    packed = _packed(values, "q", np.int64)
    return np.array(values, dtype=np.int64) if packed is None else packed


def counts(values: Sequence[int | None]) -> np.ndarray:
    """`np.array(values, dtype=np.float64)`, for a list of ints (None is NaN): packed as int64s."""
    packed = _packed(values, "q", np.int64)
    return np.array(values, dtype=np.float64) if packed is None else packed.astype(np.float64)


def _packed(values: Sequence[Any], code: str, dtype: type[np.generic]) -> np.ndarray | None:
    """`values` as a writable array of `dtype`, packed by struct as `code` (8 bytes each); None
    for a short list, or when an item is not of that kind (numpy's conversion decides then)."""
    if len(values) < SHORT:
        return None
    buffer = bytearray(8 * len(values))
    try:
        struct.pack_into(f"{len(values)}{code}", buffer, 0, *values)
    except (struct.error, TypeError, OverflowError):
        return None
    return np.frombuffer(buffer, dtype)


# A batch's numeric fields, for every sink. Each sink used to make its own column of each field
# (the metrics, window and insights sinks: three passes over the events per field); at ~1,000
# events a pass reads objects already out of the CPU's caches, so a pass costs more than its
# instructions. One comprehension per field (a `getattr` by name is ~1.5x slower per item).
_EXTRACT: dict[str, Callable[[list[Any]], list[Any]]] = {
    "timestamp": lambda evs: [e.timestamp for e in evs],
    "duration_ms": lambda evs: [e.duration_ms for e in evs],
    "cost_usd": lambda evs: [e.cost_usd for e in evs],
    "input_tokens": lambda evs: [e.input_tokens for e in evs],
    "output_tokens": lambda evs: [e.output_tokens for e in evs],
    "tokens": lambda evs: [e.tokens for e in evs],
}
_COUNTS = frozenset({"input_tokens", "output_tokens", "tokens"})  # ints up to contract.MAX_COUNT < 2**53: exact as floats


def field(batch: Batch, name: str) -> np.ndarray:
    """The batch's `name` (a numeric event field) per event as float64, NaN where an event has
    none: made once, by the first sink that asks, and shared read-only (a sink that wants other
    values makes a new array). A timestamp not in epoch seconds (events not decoded) is NaN."""
    column: np.ndarray | None = batch.columns.get(name)
    if column is None:
        column = batch.columns[name] = _column(batch.events, name)
        column.flags.writeable = False
    return column


def or_zero(column: np.ndarray) -> np.ndarray:
    """A `field` column with 0 where an event has no value (a sum counts it as nothing)."""
    return np.where(np.isnan(column), 0.0, column)


def fields(batches: Sequence[Batch], name: str, events: list[Any]) -> np.ndarray:
    """`field` of several batches filed together (`events`: theirs, in order), end to end. Batches
    of a few events (a quiet sender's) get one column made from all their events at once: six
    arrays for a batch of one event would cost more than the event. Larger ones (a socket read
    cut mid-stream leaves a short batch beside a long one) keep their shared columns."""
    if len(batches) == 1:
        return field(batches[0], name)
    if len(events) >= SHORT * len(batches):
        return np.concatenate([field(b, name) for b in batches])
    return _column(events, name)


def _column(events: list[Any], name: str) -> np.ndarray:
    values = _EXTRACT[name](events)
    try:
        if len(values) < SHORT:
            return np.array(values, dtype=np.float64)  # None is NaN
        count = name in _COUNTS
        packed = _packed(values, "q", np.int64) if count else _packed(values, "d", np.float64)
        if packed is not None:
            return packed.astype(np.float64) if count else packed
        # Not packed: a None among the numbers. (Not `values.count(None)` first: comparing a float
        # with None takes ~60 instructions, an identity test one.)
        if values[0] is None and values.count(None) == len(values):  # a field no event of the batch has
            return np.full(len(values), np.nan)
        # numpy would check each item (~30 ns); NaN packs as a float, and counts are at most
        # contract.MAX_COUNT < 2**53, exact as floats
        return floats([math.nan if v is None else v for v in values])
    except TypeError:  # a datetime: only events that skipped the decoder have one
        return np.array([v if isinstance(v, (int, float)) else None for v in values], dtype=np.float64)
