"""Python lists to numpy columns, for the sinks' hot paths.

`np.array(a_list)` discovers and checks each item's type before converting it: ~25-45 ns per item
on the bench machine, and with ~15 columns per event it was a fifth of every sink's instructions
(callgrind, BENCHMARKS.md). `struct` packs a list of floats, or of ints, in one C loop at ~10 ns
per item. These take the struct path for lists of the kind they name, and numpy's for anything
else (None, an int past 64 bits), so the result is always what `np.array` gives. A short list goes
to numpy too: struct's setup (~1 us) is more than numpy's per-item cost below ~30 items.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

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
