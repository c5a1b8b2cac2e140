"""A sorted multiset of floats with exact rank selection, in pure numpy (no sidecar imports).

Changes go to small sorted buffers of pending adds and deletes, folded into the main sorted
array when they grow, so a change costs O(1) amortised element moves and a rank is a
vectorised binary search. The arrays are never written in place: every change makes a new
array, so a reader holding (s, a, d) keeps a consistent multiset while the owner moves on.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
PERCENTILES = (50, 90, 95, 99)
EMPTY: Floats = np.empty(0, dtype=np.float64)


def nearest_rank(percent: int, n: int) -> int:
    """1-based rank of the nearest-rank percentile: the smallest r with r >= percent/100 * n."""
    return max(1, -(-percent * n // 100))


class SortedValues:
    """A multiset of floats: a sorted array S plus sorted pending adds A and deletes D.

    The live multiset is S + A - D (D is always a sub-multiset of S + A). Folding the
    buffers into S is O(n) (two sorted runs merge in linear time), done when they grow
    past 1/2**FOLD_SHIFT of S, so each change costs O(2**FOLD_SHIFT) amortised element moves.
    """

    __slots__ = ("s", "a", "d")
    FOLD_MIN = 8192  # pending changes always allowed before folding (tests lower it)
    # Buffers fold at 1/32 of S. Folding less often moves fewer values but leaves more in the
    # buffers for every select: at 1/8, 20% less per change at 1.2M values (8% at 300k), and a
    # select 1.3x (10x) slower (bench/sorted_values.py, BENCHMARKS.md 2026-12-02 08:30-09:55).
    FOLD_SHIFT = 5

    def __init__(self, values: Floats = EMPTY):
        self.s: Floats = np.sort(values)
        self.a: Floats = EMPTY
        self.d: Floats = EMPTY

    def __len__(self) -> int:
        return len(self.s) + len(self.a) - len(self.d)

    def add(self, values: Floats) -> None:
        if len(values):
            self.a = _insert_sorted(self.a, values)

    def remove(self, values: Floats) -> None:
        if len(values):
            self.d = _insert_sorted(self.d, values)

    def maybe_fold(self, slack: int = 1) -> None:
        """Fold the buffers into S once they pass slack x (1/2**FOLD_SHIFT of S)."""
        if len(self.a) + len(self.d) > slack * max(self.FOLD_MIN, len(self.s) >> self.FOLD_SHIFT):
            self.fold()

    def fold(self) -> None:
        merged = _merge_runs(self.s, self.a) if len(self.a) else self.s
        if len(self.d):
            merged = _remove_sorted(merged, self.d)
        self.s, self.a, self.d = merged, EMPTY, EMPTY

    def snapshot(self) -> SortedValues:
        """The multiset as it is now, unaffected by later changes (the arrays are shared, never copied)."""
        frozen = SortedValues.__new__(SortedValues)
        frozen.s, frozen.a, frozen.d = self.s, self.a, self.d
        return frozen

    def select(self, ranks: Ints) -> Floats:
        """The values at these 1-based ranks (each in 1..len(self))."""
        s, a, d = self.s, self.a, self.d
        if not len(a) and not len(d):
            return s[ranks - 1]
        ns, na, nd = len(s), len(a), len(d)

        def count_le(v: Floats) -> Ints:
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


def _merge(sorted_a: Floats, values: Floats) -> Floats:
    """sorted_a and values (any order) as one sorted array. The values are sorted first by numpy's
    default sort (vectorised: 0.17 ms for a flush's 16,600 durations, where the stable sort, which
    must find runs in them first, took 1.4 ms), then the two runs merge."""
    return _merge_runs(sorted_a, np.sort(values))


def _merge_runs(sorted_a: Floats, sorted_b: Floats) -> Floats:
    """Two sorted arrays as one: timsort (numpy's stable sort) merges the two runs in O(n)."""
    out = np.concatenate((sorted_a, sorted_b))
    out.sort(kind="stable")
    return out


def _insert_sorted(sorted_a: Floats, values: Floats) -> Floats:
    """Like _merge, but a few values go in by memmove instead of a pass of comparisons."""
    if len(values) * 8 > len(sorted_a):
        return _merge(sorted_a, values)
    values = np.sort(values)
    return np.insert(sorted_a, np.searchsorted(sorted_a, values), values)


def _remove_sorted(s: Floats, d: Floats) -> Floats:
    """Remove the sorted multiset d from the sorted array s (d must be contained in s)."""
    pos = np.searchsorted(s, d, "left")
    # Equal values in d must remove distinct copies: offset each by its rank in its run.
    pos += np.arange(len(d)) - np.searchsorted(d, d, "left")
    keep = np.ones(len(s), dtype=bool)
    keep[pos] = False
    return s[keep]


def ranks_of(n: int) -> Ints:
    """1-based ranks of min, p50, p90, p95, p99 and max among n values."""
    return np.array([1, *(nearest_rank(p, n) for p in PERCENTILES), n], dtype=np.int64)


def at_ranks(values: Floats) -> Floats | None:
    """min, p50, p90, p95, p99, max of unsorted values by partial selection (no full sort)."""
    n = len(values)
    if not n:
        return None
    index = ranks_of(n) - 1
    return np.partition(values, index)[index]


