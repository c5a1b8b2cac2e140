"""The sinks' list-to-column helpers give exactly what np.array gives, on either of their paths."""

import random
import sys

import numpy as np
import pytest

from sidecar.sinks.columns import SHORT, counts, floats, ints


def same(got, want):
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=True)


def random_floats(rnd, n):
    pick = [lambda: rnd.random(), lambda: rnd.uniform(0, 1e12), lambda: 0.0, lambda: sys.float_info.max,
            lambda: 5e-324, lambda: float(rnd.randrange(10**6)), lambda: float("inf")]
    return [rnd.choice(pick)() for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_floats_and_ints_equal_numpy_for_long_and_short_lists(seed):
    rnd = random.Random(seed)
    for n in (0, 1, SHORT - 1, SHORT, 1000):
        values = random_floats(rnd, n)
        same(floats(values), np.array(values, dtype=np.float64))
        whole = [rnd.choice([0, 1, rnd.randrange(10**12), 2**63 - 1, -(2**63)]) for _ in range(n)]
        same(ints(whole), np.array(whole, dtype=np.int64))
        small = [rnd.randrange(10**12) for _ in range(n)]
        same(counts(small), np.array(small, dtype=np.float64))


def test_a_list_the_fast_path_cannot_pack_goes_to_numpy_with_the_same_result():
    n = 2 * SHORT
    with_none = [1.5] * (n - 1) + [None]
    same(floats(with_none), np.array(with_none, dtype=np.float64))  # None is NaN
    assert np.isnan(floats(with_none)[-1])
    same(counts([3] * (n - 1) + [None]), np.array([3] * (n - 1) + [None], dtype=np.float64))
    mixed = [1, 2.5] * SHORT  # ints in a float column convert
    same(floats(mixed), np.array(mixed, dtype=np.float64))
    flags = [True, False] * SHORT
    same(ints(flags), np.array(flags, dtype=np.int64))
    huge = [1] * (n - 1) + [2**64]  # past 64 bits: a float column holds it, an int64 one cannot
    same(counts(huge), np.array(huge, dtype=np.float64))
    with pytest.raises(OverflowError):
        ints(huge)
    with pytest.raises(OverflowError):
        floats([1.0] * (n - 1) + [10**400])  # what numpy says of an int no float holds


def test_columns_are_writable():
    for column in (floats([1.0] * 100), ints([1] * 100), counts([1] * 100)):
        column[0] = 7
        assert column[0] == 7
