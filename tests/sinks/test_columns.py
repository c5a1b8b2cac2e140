"""The sinks' list-to-column helpers give exactly what np.array gives, on either of their paths;
a batch's numeric fields are made once and shared read-only."""

import random
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

from sidecar.sinks.columns import SHORT, counts, field, fields, floats, ints
from sidecar.types import Batch, Event


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


NUMERIC = ("timestamp", "duration_ms", "cost_usd", "input_tokens", "output_tokens", "tokens")


def random_batch(rnd, n):
    def maybe(value):
        return None if rnd.random() < 0.3 else value

    events = [
        Event(type="llm.call", timestamp=rnd.uniform(0, 2e9), duration_ms=maybe(rnd.uniform(0, 1e12)), cost_usd=maybe(rnd.uniform(0, 1e9)),
              input_tokens=maybe(rnd.randrange(10**12 + 1)), output_tokens=maybe(rnd.randrange(10**12 + 1)), tokens=maybe(rnd.randrange(3)))
        for _ in range(n)
    ]
    return Batch(events, [b"{}"] * n, 0.0, "test")


@pytest.mark.parametrize("n", [1, SHORT - 1, SHORT, 500])
def test_a_batch_field_is_each_events_value_as_a_float_with_nan_for_none(n):
    rnd = random.Random(n)
    batch = random_batch(rnd, n)
    for name in NUMERIC:
        want = np.array([getattr(ev, name) for ev in batch.events], dtype=np.float64)
        same(field(batch, name), want)
    assert any(ev.input_tokens is None for ev in batch.events) == bool(np.isnan(field(batch, "input_tokens")).any())


def test_a_batch_field_is_made_once_and_cannot_be_written():
    batch = random_batch(random.Random(1), 100)
    column = field(batch, "duration_ms")
    assert field(batch, "duration_ms") is column  # the second sink reads the first one's
    with pytest.raises(ValueError, match="read-only"):
        column[0] = 1.0  # a sink changing it would change what the others read


def test_fields_of_several_batches_join_them_in_order():
    rnd = random.Random(2)
    for sizes, shared in (((3, 40, 1), False), ((1, 1, 200), True), ((900, 120), True)):
        batches = [random_batch(rnd, n) for n in sizes]
        events = [ev for b in batches for ev in b.events]
        for name in NUMERIC:
            same(fields(batches, name, events), np.array([getattr(ev, name) for ev in events], dtype=np.float64))
        # Batches of a few events each, filed together, get one column for all (not one per batch);
        # larger ones keep theirs, which the other sinks then read.
        assert all(bool(b.columns) == shared for b in batches), sizes
    assert fields(batches[:1], "cost_usd", batches[0].events) is field(batches[0], "cost_usd")


def test_a_timestamp_not_in_epoch_seconds_is_nan():
    """Only events that skipped the decoder keep a datetime (it makes every timestamp epoch seconds)."""
    events = [Event(type="llm.call", timestamp=1.5), Event(type="llm.call", timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    stamps = field(Batch(events, [b"{}", b"{}"], 0.0, "test"), "timestamp")
    assert stamps[0] == 1.5 and np.isnan(stamps[1])


@pytest.mark.parametrize("n", [1, SHORT, 200])
def test_a_field_no_event_has_or_some_lack_is_nan_there(n):
    events = [Event(type="llm.call", timestamp=1.0, input_tokens=None if i % 3 else 10**12 - i) for i in range(n)]
    batch = Batch(events, [b"{}"] * n, 0.0, "test")
    same(field(batch, "tokens"), np.full(n, np.nan))
    same(field(batch, "input_tokens"), np.array([ev.input_tokens for ev in events], dtype=np.float64))
