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
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from sidecar.sinks.window.sorted_values import PERCENTILES, Floats, Ints, at_ranks, ranks_of
from sidecar.sinks.window.view import COUNTER_FIELDS, FIELD, Int32s, KeysView, Rows, Section, Snapshot, sampled
from sidecar.types import SEVERITIES

Pack = Callable[[dict[str, Any]], Any] | None
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


def stats_document(snap: Snapshot, query: Query, pack: Pack = None) -> dict[str, Any]:
    """The /v1/stats answer: one window (query.window set; the snapshot holds just it) or all.

    `pack`, if given, is applied to each group document as soon as it is built (the route
    encodes it to JSON there, so thousands of nested dicts never pile up for the GC to walk)."""
    stamp = as_of(snap.now)
    if query.window is not None:
        return _section_doc(snap, snap.windows[0], query, pack, stamp)
    assert snap.cumulative is not None
    return {
        "as_of": stamp,
        "windows": {s.name: _section_doc(snap, s, query, pack) for s in snap.windows},
        "cumulative": _section_doc(snap, snap.cumulative, query, pack),
    }


def _section_doc(snap: Snapshot, s: Section, query: Query, pack: Pack, stamp: str | None = None) -> dict[str, Any]:
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
        doc = _doc(_section_totals(keys, s, ks), 0, s.seconds, values, n, runs)
        if not s.exact:
            doc["sample_size"] = n
        return head | doc
    rows = s.rows
    if ks is not None and not rows.filtered:
        rows = _only(rows, keys, ks)
    # The since-start reservoir holds only durations; store rows need their sample mask.
    keep = None if s.values is None else sampled(rows.ts, rows.dur, rows.level)
    values = rows.dur if keep is None else rows.dur[keep]
    if rows.run is not None:
        runs = _distinct(rows.run)
    else:  # since start, run ids are counted only for the whole stream
        runs = s.runs if not query.filters and query.by is None else None
    doc = _doc(_section_totals(keys, s, ks), 0, s.seconds, at_ranks(values), len(values), runs)
    if not s.exact:
        doc["sample_size"] = len(values)
    if query.by is None:
        return head | doc
    return head | doc | _groups(keys, s, ks, rows, keep, query, pack)


def _section_totals(keys: KeysView, s: Section, ks: Ints | None) -> Totals:
    """Totals of one section over keys ks (None: all): the one-slot case, by dense bincounts."""
    counters = s.counters if ks is None else s.counters[ks]
    sums = counters.sum(axis=0)  # every field in one pass
    events_k = counters[:, FIELD["events"]]
    fields = {f: sums[i : i + 1] for i, f in enumerate(COUNTER_FIELDS)}
    failed = keys.failed if ks is None else keys.failed[ks]
    fields["errors"] = np.array([events_k[failed].sum()])
    severity = np.bincount(keys.severity if ks is None else keys.severity[ks], weights=events_k, minlength=len(SEVERITIES))

    def named(dim: str) -> npt.NDArray[Any]:
        """Events per value of dim (index into keys.names[dim])."""
        return np.bincount(keys.of[dim] if ks is None else keys.of[dim][ks], weights=events_k, minlength=keys.n_names[dim])

    per_agent = named("agent")
    none = keys.name_index("agent", None)
    agents = int(np.count_nonzero(per_agent)) - (none is not None and bool(per_agent[none] > 0))
    per_type = named("type")
    present = np.flatnonzero(per_type)
    top = present
    if len(present) > MAX_TYPES:
        # The most frequent, ties by first seen: a stable sort of the counts, descending.
        top = np.sort(present[np.argsort(-per_type[present], kind="stable")[:MAX_TYPES]])
    names = keys.names["type"]
    shown = {names[t]: int(c) for t, c in zip(top.tolist(), per_type[top].tolist())}
    omitted = {"types": len(present) - len(top), "events": int(per_type.sum()) - sum(shown.values())}
    return Totals(fields, severity.reshape(1, -1), np.array([agents]), [(shown, omitted)])


def _only(rows: Rows, keys: KeysView, ks: Ints) -> Rows:
    """The rows whose key is in ks: one pass for the positions, then gathers (cheaper than 4 masks)."""
    mask = np.zeros(keys.n, dtype=bool)
    mask[ks] = True
    idx = np.flatnonzero(np.take(mask, rows.key))
    return Rows(
        key=rows.key.take(idx), dur=rows.dur.take(idx), run=None if rows.run is None else rows.run.take(idx),
        ts=None if rows.ts is None else rows.ts.take(idx), level=rows.level, filtered=True,
    )


def _groups(keys: KeysView, s: Section, ks: Ints | None, rows: Rows, keep: npt.NDArray[np.bool_] | None, query: Query, pack: Pack) -> dict[str, Any]:
    """The `limit` most active values of query.by, each with its own statistics."""
    by = query.by
    assert by is not None
    names = keys.names[by]
    group_of = keys.of[by]
    pool = np.arange(keys.n) if ks is None else ks
    per_group = np.bincount(group_of[pool], weights=s.per_key("events")[pool], minlength=keys.n_names[by])
    active = np.flatnonzero(per_group > 0)
    limit = min(query.limit, MAX_LIMIT)
    if len(active) > limit:
        # Only values tied with or above the limit-th count can be chosen: sort just those.
        kth = np.partition(per_group[active], len(active) - limit)[len(active) - limit]
        active = active[per_group[active] >= kth]
    # Most events first, ties by name. numpy sorts (not sorted() on tuples), so a worker thread
    # computing this never holds the GIL for long against the event loop.
    label = np.array([str(names[g]) for g in active.tolist()], dtype=str)
    chosen = active[np.lexsort((label, -per_group[active]))[:limit]].tolist()
    # Each chosen group gets a slot; the counter sums of every slot come from one pass over keys.
    slot = np.full(keys.n_names[by], -1, dtype=np.int64)
    slot[chosen] = np.arange(len(chosen))
    pj = slot[group_of[pool]]
    in_chosen = pj >= 0
    totals = _totals(keys, s, pool[in_chosen], pj[in_chosen], len(chosen))
    # Rows sorted by group (a radix sort on uint16), then a slice per group for its quantiles.
    row_group = np.take(group_of.astype(np.uint16), rows.key)
    order = np.argsort(row_group, kind="stable")
    sorted_groups = row_group[order]
    bounds = np.searchsorted(sorted_groups, np.array(chosen, dtype=np.uint16)), np.searchsorted(sorted_groups, np.array(chosen, dtype=np.uint16), "right")
    groups = []
    for j, (g, lo, hi) in enumerate(zip(chosen, bounds[0].tolist(), bounds[1].tolist())):
        if j % 32 == 31:
            time.sleep(0)  # off the loop: hand the GIL to the event loop's thread now and then
        idx = order[lo:hi]
        gvalues = rows.dur[idx if keep is None else idx[keep[idx]]]
        runs = None if rows.run is None else _distinct(rows.run[idx])
        gdoc = _doc(totals, j, s.seconds, at_ranks(gvalues), len(gvalues), runs)
        if not s.exact:
            gdoc["sample_size"] = len(gvalues)
        group = {"key": names[g]} | gdoc
        groups.append(group if pack is None else pack(group))
    return {"by": by, "groups": groups, "groups_omitted": int(np.count_nonzero(per_group)) - len(chosen)}


@dataclass(frozen=True, slots=True)
class Totals:
    """Counter sums for m slots (a section: one slot; groups: one each), from their keys."""

    fields: dict[str, npt.NDArray[Any]]  # per counter field (and "errors"): one sum per slot
    severity: npt.NDArray[Any]  # (m, severities) events
    agents: Ints  # distinct agents with events, per slot
    types: list[tuple[dict[str | None, int], dict[str, int]]]  # per slot: top types, and the rest


def _totals(keys: KeysView, s: Section, pk: Ints, pj: Ints, m: int) -> Totals:
    """Sums over keys pk, where key pk[i] belongs to slot pj[i] (one bincount per field, no loop)."""
    events_k = s.per_key("events")[pk]
    fields = {f: np.bincount(pj, weights=s.per_key(f)[pk], minlength=m) for f in COUNTER_FIELDS}
    fields["errors"] = np.bincount(pj, weights=events_k * keys.failed[pk], minlength=m)
    n_sev = len(SEVERITIES)
    severity = np.bincount(pj * n_sev + keys.severity[pk], weights=events_k, minlength=m * n_sev).reshape(m, n_sev)
    live = events_k > 0
    pk, pj, events_k = pk[live], pj[live], events_k[live]
    agent = keys.of["agent"][pk]
    none = keys.name_index("agent", None)
    if none is not None:
        agent, pj_a = agent[agent != none], pj[agent != none]
    else:
        pj_a = pj
    pairs = _unique(pj_a * keys.n_names["agent"] + agent)
    agents = np.bincount(pairs // max(keys.n_names["agent"], 1), minlength=m)
    return Totals(fields, severity, agents, _top_types(keys, pj, keys.of["type"][pk], events_k, m))


def _top_types(keys: KeysView, pj: Ints, type_of: Int32s, events_k: Floats, m: int) -> list[tuple[dict[str | None, int], dict[str, int]]]:
    """Per slot, the MAX_TYPES most frequent types (ties: first seen) and how many types/events are left out."""
    n_types = max(keys.n_names["type"], 1)
    by_pair = np.argsort(pj * n_types + type_of, kind="stable")
    sorted_pairs = (pj * n_types + type_of)[by_pair]
    starts = np.flatnonzero(np.concatenate(([True], sorted_pairs[1:] != sorted_pairs[:-1]))) if len(sorted_pairs) else np.empty(0, dtype=np.int64)
    pairs = sorted_pairs[starts]
    counts = np.add.reduceat(events_k[by_pair], starts) if len(starts) else np.empty(0)
    slots, types = pairs // n_types, pairs % n_types
    order = np.lexsort((types, -counts, slots))
    slots, types, counts = slots[order], types[order], counts[order]
    starts = np.searchsorted(slots, np.arange(m + 1))
    names = keys.names["type"]
    out = []
    for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist()):
        top = min(hi, lo + MAX_TYPES)
        shown = {names[t]: int(c) for t, c in zip(types[lo:top].tolist(), counts[lo:top].tolist())}
        out.append((shown, {"types": hi - top, "events": int(counts[top:hi].sum())}))
    return out


def _doc(t: Totals, j: int, seconds: float, values: Floats | None, n_values: int, runs: int | None) -> dict[str, Any]:
    """Slot j's fields; `values` are min, p50, p90, p95, p99, max of its duration samples."""
    f = {name: float(column[j]) for name, column in t.fields.items()}
    events, errors, count = int(f["events"]), int(f["errors"]), int(f["durations"])
    total, cost = f["duration_sum"], f["cost"]
    tin, tout, tother = int(f["input"]), int(f["output"]), int(f["other"])
    tokens = tin + tout + tother
    duration: dict[str, Any] = {"count": count, "sum": _finite(total), "avg": _finite(total / count) if count else None}
    if values is None or not n_values:
        duration |= {"min": None, "max": None} | {f"p{p}": None for p in PERCENTILES}
    else:
        v = [_finite(x) for x in values.tolist()]
        duration |= {"min": v[0], "max": v[-1]} | {f"p{p}": x for p, x in zip(PERCENTILES, v[1:-1])}
    by_type, omitted = t.types[j]
    severity = t.severity[j]
    return {
        "events": events,
        "events_by_type": by_type,
        "events_by_type_omitted": omitted,
        "events_by_severity": {SEVERITIES[i]: int(severity[i]) for i in np.flatnonzero(severity).tolist()},
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
        "agents_active": int(t.agents[j]),
        "runs_seen": runs,
        "workflows_active": runs,  # deprecated alias of runs_seen (one release; see README)
    }


def _distinct(runs: Int32s) -> int:
    """Distinct run ids (small interned ints; -1 is none): a bincount when dense, else a sort."""
    runs = runs[runs >= 0]
    if not len(runs):
        return 0
    if len(runs) * 8 >= int(runs.max()):
        return int(np.count_nonzero(np.bincount(runs)))
    return len(_unique(runs))


def _unique(values: npt.NDArray[np.int64] | Int32s) -> npt.NDArray[Any]:
    """Sorted distinct values by a plain sort (np.unique's hash path holds the GIL throughout)."""
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(ordered) else ordered


def _finite(x: float) -> float | None:
    """JSON has no inf or NaN: a value that is not finite is reported as null (sums are kept
    finite by clamping each amount at filing, so this guards rates of tiny spans)."""
    return x if math.isfinite(x) else None


def _number(seconds: float) -> float | int:
    return int(seconds) if seconds == int(seconds) else seconds
