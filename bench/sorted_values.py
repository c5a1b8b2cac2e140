"""The window store's sorted durations in a steady state: what a flush's changes cost, and a select.

    PYTHONPATH=. python bench/sorted_values.py [--values 1200000] [--rounds 3]

A SortedValues of VALUES durations (a window at steady state) takes flushes of 16,384 new values
and evicts as many old ones, folding as the store does (maybe_fold after each flush); then a
query selects min, p50, p90, p95, p99 and max from a snapshot. Both are timed per fold threshold
(SortedValues.FOLD_SHIFT: the buffers fold at 1/2**shift of the sorted array), shifts taken in
turn within each round so that this VM's drift lands on all of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sidecar.sinks.window.sorted_values import SortedValues, ranks_of  # noqa: E402

FLUSH = 16_384  # the store's FLUSH_EVENTS


def with_shift(shift: int) -> type[SortedValues]:
    return type(f"Shift{shift}", (SortedValues,), {"__slots__": (), "FOLD_SHIFT": shift})


def run(cls: type[SortedValues], base: np.ndarray, flushes: list[np.ndarray]) -> tuple[float, float]:
    """(ns per changed value, µs per select) over the flushes."""
    values = cls(base)
    stored = deque(base[i : i + FLUSH] for i in range(0, len(base), FLUSH))
    changing = selecting = 0.0
    for new in flushes:
        t0 = time.perf_counter()
        values.add(new)
        stored.append(new)
        values.remove(stored.popleft())
        values.maybe_fold(1)
        t1 = time.perf_counter()
        values.snapshot().select(ranks_of(len(values)))
        selecting += time.perf_counter() - t1
        changing += t1 - t0
    return changing / (len(flushes) * FLUSH) * 1e9, selecting / len(flushes) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=1_200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shifts", type=int, nargs="+", default=[5, 4, 3])
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    base = rng.lognormal(6, 1.2, args.values)
    flushes = [rng.lognormal(6, 1.2, FLUSH) for _ in range(60)]
    print(f"{args.values:,} values, {len(flushes)} flushes of {FLUSH:,} in and out; current FOLD_SHIFT = {SortedValues.FOLD_SHIFT}")
    for r in range(args.rounds):
        for shift in args.shifts:
            change, select = run(with_shift(shift), base, flushes)
            print(f"round {r + 1} shift {shift} (fold at 1/{2**shift}): {change:.0f} ns per value in, {select:.0f} µs per select")


if __name__ == "__main__":
    main()
