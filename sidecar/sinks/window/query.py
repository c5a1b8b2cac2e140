"""The /v1/stats document, read off a `Snapshot` (no state changes; safe on any thread).

Counts and sums come from per-key counters (O(keys)); quantiles from a window's sorted
samples, or, with filters or groups, from its rows. The work and the answer are bounded
whatever the number of distinct values: at most MAX_LIMIT groups (their number past the
limit is reported as `groups_omitted`), at most MAX_TYPES entries in `events_by_type`
(the rest summed in `events_by_type_omitted`), and each group costs time in proportion to
its own keys and rows, not to the whole table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from sidecar.sinks.window.sorted_values import PERCENTILES, Floats, Ints, at_ranks, ranks_of
from sidecar.sinks.window.view import Int32s, KeysView, Rows, Section, Snapshot, sampled
from sidecar.types import SEVERITIES

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000  # groups per section in one answer (?limit= above it is refused)
MAX_TYPES = 50  # events_by_type entries per document (the most frequent; the rest are summed)


@dataclass(frozen=True, slots=True)
class Query:
    """What a /v1/stats request asks for (validated by the route)."""

    window: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    by: str | None = None
    limit: int = DEFAULT_LIMIT

    def indexed(self, index_by: tuple[str, ...]) -> tuple[str, str] | None:
        """The (field, value) filter answered from windows.index_by's per-value samples, if any."""
        if self.by is None and len(self.filters) == 1:
            ((dim, value),) = self.filters.items()
            if dim in index_by:
                return dim, value
        return None

    def reads_rows(self, index_by: tuple[str, ...]) -> bool:
        """Whether window sections need their rows (the costly path, run off the event loop)."""
        return (bool(self.filters) or self.by is not None) and self.indexed(index_by) is None


def detach(snap: Snapshot, query: Query) -> Snapshot:
    """The snapshot with rows of its own, to read on another thread: with filters, only the
    matching rows are gathered (the first step of the query anyway); without, they are copied."""
    ks = snap.keys.matching(query.filters)

    def own(rows: Rows | None) -> Rows | None:
        if rows is None:
            return None
        if ks is None:
            return replace(rows, key=rows.key.copy(), dur=rows.dur.copy(), run=None if rows.run is None else rows.run.copy(),
                           ts=None if rows.ts is None else rows.ts.copy())
        return _only(rows, snap.keys, ks)

    windows = tuple(replace(s, rows=own(s.rows)) for s in snap.windows)
    cumulative = None if snap.cumulative is None else replace(snap.cumulative, rows=own(snap.cumulative.rows))
    return replace(snap, windows=windows, cumulative=cumulative)


def as_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stats_document(snap: Snapshot, query: Query) -> dict[str, Any]:
    """The /v1/stats answer: one window (query.window set; the snapshot holds just it) or all."""
    stamp = as_of(snap.now)
    if query.window is not None:
        return _section_doc(snap, snap.windows[0], query, stamp)
    assert snap.cumulative is not None
    return {
        "as_of": stamp,
        "windows": {s.name: _section_doc(snap, s, query) for s in snap.windows},
        "cumulative": _section_doc(snap, snap.cumulative, query),
    }


def _section_doc(snap: Snapshot, s: Section, query: Query, stamp: str | None = None) -> dict[str, Any]:
    head: dict[str, Any] = {"window": s.name, "window_seconds": _number(s.seconds)}
    if stamp is not None:
        head["as_of"] = stamp
    head["exact"] = s.exact
    keys = snap.keys
    ks = keys.matching(query.filters)
    if s.rows is None:  # the window's own samples (no filter), or one indexed value's
        source, runs = s.indexed if s.indexed is not None else (s.values, s.runs)
        assert source is not None
        n = len(source)
        values = source.select(ranks_of(n)) if n else None
        doc = _doc(keys, s, ks, values, n, runs)
        if not s.exact:
            doc["sample_size"] = n
        return head | doc
    rows = s.rows
    if ks is not None and not rows.filtered:
        rows = _only(rows, keys, ks)
    keep = sampled(rows.ts, rows.dur, rows.level)
    values = rows.dur[keep]
    if rows.run is not None:
        runs = _distinct(rows.run)
    else:  # since start, run ids are counted only for the whole stream
        runs = s.runs if not query.filters and query.by is None else None
    doc = _doc(keys, s, ks, at_ranks(values), len(values), runs)
    if not s.exact:
        doc["sample_size"] = len(values)
    if query.by is None:
        return head | doc
    return head | doc | _groups(keys, s, ks, rows, keep, query)


def _only(rows: Rows, keys: KeysView, ks: Ints) -> Rows:
    """The rows whose key is in ks: one pass for the positions, then gathers (cheaper than 4 masks)."""
    mask = np.zeros(keys.n, dtype=bool)
    mask[ks] = True
    idx = np.flatnonzero(np.take(mask, rows.key))
    return Rows(
        key=rows.key.take(idx), dur=rows.dur.take(idx), run=None if rows.run is None else rows.run.take(idx),
        ts=None if rows.ts is None else rows.ts.take(idx), level=rows.level, filtered=True,
    )


def _groups(keys: KeysView, s: Section, ks: Ints | None, rows: Rows, keep: npt.NDArray[np.bool_], query: Query) -> dict[str, Any]:
    """The `limit` most active values of query.by, each with its own statistics."""
    by = query.by
    assert by is not None
    names = keys.names[by]
    group_of = keys.of[by]
    events = s.per_key("events")
    key_weights = events if ks is None else np.bincount(ks, weights=events[ks], minlength=keys.n)
    per_group = np.bincount(group_of, weights=key_weights, minlength=keys.n_names[by])
    active = np.flatnonzero(per_group > 0)
    limit = min(query.limit, MAX_LIMIT)
    if len(active) > limit:
        # Only values tied with or above the limit-th count can be chosen: sort just those.
        kth = np.partition(per_group[active], len(active) - limit)[len(active) - limit]
        active = active[per_group[active] >= kth]
    chosen = sorted(active.tolist(), key=lambda g: (-per_group[g], str(names[g])))[:limit]
    omitted = int(np.count_nonzero(per_group)) - len(chosen)
    # Keys and rows sorted by group (a radix sort on uint16), then a slice per group.
    key_pool = np.arange(keys.n) if ks is None else ks
    key_order = key_pool[np.argsort(group_of[key_pool], kind="stable")]
    key_groups = group_of[key_order]
    row_group = np.take(group_of.astype(np.uint16), rows.key)
    order = np.argsort(row_group, kind="stable")
    sorted_groups = row_group[order]
    groups = []
    for g in chosen:
        gkeys = key_order[np.searchsorted(key_groups, g, "left") : np.searchsorted(key_groups, g, "right")]
        idx = order[np.searchsorted(sorted_groups, g, "left") : np.searchsorted(sorted_groups, g, "right")]
        gvalues = rows.dur[idx[keep[idx]]]
        runs = None if rows.run is None else _distinct(rows.run[idx])
        gdoc = _doc(keys, s, gkeys, at_ranks(gvalues), len(gvalues), runs)
        if not s.exact:
            gdoc["sample_size"] = len(gvalues)
        groups.append({"key": names[g]} | gdoc)
    return {"by": by, "groups": groups, "groups_omitted": omitted}


def _doc(keys: KeysView, s: Section, ks: Ints | None, values: Floats | None, n_values: int, runs: int | None) -> dict[str, Any]:
    """One section's (or group's) fields over the keys `ks` (None: all keys); `values` are
    min, p50, p90, p95, p99, max of the duration samples."""

    def per_key(name: str) -> Floats:
        column = s.per_key(name)
        return column if ks is None else column[ks]

    def of(dim: str) -> Int32s:
        return keys.of[dim] if ks is None else keys.of[dim][ks]

    events_k = per_key("events")
    events = int(events_k.sum())
    severity = keys.severity if ks is None else keys.severity[ks]
    failed = keys.failed if ks is None else keys.failed[ks]
    by_sev = np.bincount(severity, weights=events_k, minlength=len(SEVERITIES))
    errors = int(events_k[failed].sum())
    agents = _distinct_names(keys, "agent", of("agent"), events_k)
    count = int(per_key("durations").sum())
    total = float(per_key("duration_sum").sum())
    tin, tout, tother = (int(per_key(f).sum()) for f in ("input", "output", "other"))
    tokens = tin + tout + tother
    cost = float(per_key("cost").sum())
    duration: dict[str, Any] = {"count": count, "sum": _finite(total), "avg": _finite(total / count) if count else None}
    if values is None or not n_values:
        duration |= {"min": None, "max": None} | {f"p{p}": None for p in PERCENTILES}
    else:
        v = [_finite(x) for x in values.tolist()]
        duration |= {"min": v[0], "max": v[-1]} | {f"p{p}": x for p, x in zip(PERCENTILES, v[1:-1])}
    seconds = s.seconds
    by_type, omitted = _top_types(keys, of("type"), events_k)
    return {
        "events": events,
        "events_by_type": by_type,
        "events_by_type_omitted": omitted,
        "events_by_severity": {SEVERITIES[i]: int(by_sev[i]) for i in np.flatnonzero(by_sev).tolist()},
        "errors": errors,
        "error_rate": errors / events if events else None,
        "duration_ms": duration,
        "tokens": {"input": tin, "output": tout, "total": tokens},
        "cost_usd": _finite(cost),
        "rates": {
            "events_per_second": _finite(events / seconds) if seconds > 0 else None,
            "tokens_per_second": _finite(tokens / seconds) if seconds > 0 else None,
            "cost_per_hour_usd": _finite(cost / seconds * 3600) if seconds > 0 else None,
        },
        "agents_active": agents,
        "runs_seen": runs,
        "workflows_active": runs,  # deprecated alias of runs_seen (one release; see README)
    }


def _top_types(keys: KeysView, type_of: Int32s, events_k: Floats) -> tuple[dict[str | None, int], dict[str, int]]:
    """The MAX_TYPES most frequent types with their events, and how many types/events are left out."""
    n_names = keys.n_names["type"]
    if len(type_of) * 8 >= n_names:  # dense (the whole table): a bincount, no sort
        ids = np.arange(n_names)
        counts = np.bincount(type_of, weights=events_k, minlength=n_names)
    else:
        ids, inverse = np.unique(type_of, return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), weights=events_k, minlength=len(ids))
    present = np.flatnonzero(counts > 0)
    names = keys.names["type"]
    if len(present) > MAX_TYPES:
        kth = np.partition(counts[present], len(present) - MAX_TYPES)[len(present) - MAX_TYPES]
        top = present[counts[present] >= kth]
        top = np.array(sorted(top.tolist(), key=lambda i: (-counts[i], str(names[int(ids[i])])))[:MAX_TYPES], dtype=np.int64)
    else:
        top = present
    shown = {names[int(ids[i])]: int(counts[i]) for i in top.tolist()}
    rest = int(counts.sum()) - sum(shown.values())
    return shown, {"types": len(present) - len(top), "events": rest}


def _distinct_names(keys: KeysView, dim: str, of: Int32s, events_k: Floats) -> int:
    """Distinct values of `dim` (not counting None) among keys with events."""
    none = keys.name_index(dim, None)
    if len(of) * 8 >= keys.n_names[dim]:  # dense (the whole table): a bincount, no sort
        per_name = np.bincount(of, weights=events_k, minlength=keys.n_names[dim])
        return int(np.count_nonzero(per_name)) - (none is not None and bool(per_name[none] > 0))
    present = np.unique(of[events_k > 0])
    return len(present) - (none is not None and bool(np.isin(none, present)))


def _distinct(runs: Int32s) -> int:
    """Distinct run ids (small interned ints; -1 is none): a bincount when dense, else a sort."""
    runs = runs[runs >= 0]
    if not len(runs):
        return 0
    if len(runs) * 8 >= int(runs.max()):
        return int(np.count_nonzero(np.bincount(runs)))
    return len(np.unique(runs))


def _finite(x: float) -> float | None:
    """JSON has no inf or NaN: a value that is not finite is reported as null (sums are kept
    finite by clamping each amount at filing, so this guards rates of tiny spans)."""
    return x if math.isfinite(x) else None


def _number(seconds: float) -> float | int:
    return int(seconds) if seconds == int(seconds) else seconds
