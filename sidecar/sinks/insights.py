"""The insights store: per-subject sums and every duration, in buckets of event time.

`/v1/insights` compares a window with the baseline before it, per subject (one
combination of type, agent, workflow and model), and needs what the window sink does
not keep: error kinds, failures per invocation and the runs still open. Buckets of
`insights.bucket` seconds cover `insights.retention`; any window and baseline of whole
buckets is then a sum over buckets, with every duration kept (exact p95).

The pipeline (on the event loop) is the only writer. `snapshot` copies what a query needs
under a lock held only for the copy; `sidecar.insights` then works on the copy in a
worker thread, so a query never holds up ingest for longer than that copy.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sidecar.config import InsightsConfig
from sidecar.types import Batch

Subject = tuple[str, str | None, str | None, str | None]  # type, agent, workflow, model
Failure = tuple[str | None, str | None, str]  # agent, model, invocation (or run) id
# Per-subject sums, in this order (a list each, so the hot path bumps items in place).
EVENTS, ERRORS, COST, INPUT, TOKEN_CALLS, TOKENS = FIELDS = range(6)  # TOKENS: input + output + other
_OPENS = {"workflow.started": ("run", "run_id"), "agent.invoked": ("invocation", "invocation_id")}
_ENDS = {
    "workflow.completed": ("run", "run_id"), "workflow.failed": ("run", "run_id"),
    "agent.completed": ("invocation", "invocation_id"), "agent.failed": ("invocation", "invocation_id"),
}


class _Bucket:
    """One bucket of event time. Once past (`freeze`), it is never written again: a late event
    goes into a thawed copy that replaces it (`thaw`), so a query may read a frozen bucket
    outside the lock while the pipeline goes on."""

    __slots__ = ("sums", "durations", "errors", "failures", "frozen", "keys", "table")

    def __init__(self) -> None:
        self.sums: dict[Subject, list[float]] = {}
        # lists while the bucket fills, arrays once frozen
        self.durations: dict[Subject, list[float] | np.ndarray] = {}
        self.errors: Counter[tuple[Subject, str]] = Counter()
        self.failures: Counter[Failure] = Counter()
        self.frozen = False
        self.keys: list[Subject] = []  # when frozen: the subjects, and their sums as rows of `table`
        self.table = np.empty((0, len(FIELDS)))

    def freeze(self) -> None:
        self.durations = {s: np.array(v, dtype=np.float64) if isinstance(v, list) else v for s, v in self.durations.items()}
        self.keys = list(self.sums)
        self.table = np.array(list(self.sums.values()), dtype=np.float64).reshape(len(self.keys), len(FIELDS))
        self.frozen = True

    def thaw(self) -> _Bucket:
        """A writable copy (arrays shared: they are replaced, never written in place)."""
        out = _Bucket()
        out.sums = {s: v[:] for s, v in self.sums.items()}
        out.durations = dict(self.durations)
        out.errors = self.errors.copy()
        out.failures = self.failures.copy()
        return out

    def rows(self) -> tuple[list[Subject], np.ndarray]:
        if self.frozen:
            return self.keys, self.table
        return list(self.sums), np.array(list(self.sums.values()), dtype=np.float64).reshape(len(self.sums), len(FIELDS))


@dataclass
class Period:
    """Sums over a span of buckets: what `sidecar.insights` judges (one for the window, one for the
    baseline). `errors` and `failures` are filled for the window only: no rule reads the baseline's."""

    seconds: float
    sums: dict[Subject, list[float]] = field(default_factory=dict)
    durations: dict[Subject, np.ndarray] = field(default_factory=dict)
    errors: Counter[tuple[Subject, str]] = field(default_factory=Counter)
    failures: Counter[Failure] = field(default_factory=Counter)


@dataclass(frozen=True)
class OpenItem:
    """A run (by workflow) or invocation (by agent) that started and has not ended."""

    kind: str  # "run" or "invocation"
    name: str | None  # its workflow or agent
    age: float  # seconds since it started, at the snapshot


@dataclass
class Snapshot:
    window: Period
    baseline: Period
    open: list[OpenItem]
    as_of: float
    exact: bool  # False when the subject cap or max_active dropped something


class InsightsStore:
    """A sink: keeps `insights.retention` of event time in buckets (see module docstring)."""

    name = "insights"

    def __init__(self, config: InsightsConfig, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self.width = config.bucket
        self.buckets: dict[int, _Bucket] = {}
        self.open: dict[tuple[str, str], tuple[float, str | None]] = {}  # insertion order ~ start order
        self.dropped = 0  # subjects past the cap, and open items pushed out by max_active
        self._lock = threading.Lock()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def consume(self, batch: Batch) -> None:
        width = self.width
        now = self.clock()
        oldest = now - self.config.retention
        cap = self.config.max_subjects
        buckets = self.buckets
        with self._lock:
            for ev in batch.events:
                ts = ev.timestamp
                assert isinstance(ts, float)  # the decoder normalises timestamps to epoch seconds
                if ts < oldest:
                    continue
                index = math.floor(ts / width)
                bucket = buckets.get(index)
                if bucket is None:
                    bucket = buckets[index] = _Bucket()
                elif bucket.frozen:  # a late event: a query may be reading the frozen one
                    bucket = buckets[index] = bucket.thaw()
                subject = (ev.type, ev.agent, ev.workflow, ev.model)
                sums = bucket.sums.get(subject)
                if sums is None:
                    if len(bucket.sums) >= cap:
                        self.dropped += 1
                        continue
                    sums = bucket.sums[subject] = [0.0] * len(FIELDS)
                sums[EVENTS] += 1
                if ev.cost_usd:
                    sums[COST] += ev.cost_usd
                if ev.input_tokens is not None:
                    sums[INPUT] += ev.input_tokens
                    sums[TOKEN_CALLS] += 1
                    sums[TOKENS] += ev.input_tokens
                if ev.output_tokens is not None:
                    sums[TOKENS] += ev.output_tokens
                if ev.tokens is not None:
                    sums[TOKENS] += ev.tokens
                if ev.duration_ms is not None:
                    values = bucket.durations.get(subject)
                    if values is None:
                        bucket.durations[subject] = [ev.duration_ms]
                    elif isinstance(values, list):
                        values.append(ev.duration_ms)
                    else:  # a late event into a frozen bucket
                        bucket.durations[subject] = np.append(values, ev.duration_ms)
                if ev.success is False:
                    sums[ERRORS] += 1
                    bucket.errors[(subject, ev.error or "unknown")] += 1
                    ident = ev.invocation_id or ev.run_id
                    if ident is not None and len(bucket.failures) < cap:
                        bucket.failures[(ev.agent, ev.model, ident)] += 1
                if ev.type in _OPENS:
                    kind, attr = _OPENS[ev.type]
                    ident = getattr(ev, attr)
                    if ident is not None:
                        self._opened((kind, ident), ts, ev.workflow if kind == "run" else ev.agent)
                elif ev.type in _ENDS:
                    kind, attr = _ENDS[ev.type]
                    ident = getattr(ev, attr)
                    if ident is not None:
                        self.open.pop((kind, ident), None)

    def _opened(self, key: tuple[str, str], ts: float, name: str | None) -> None:
        if key not in self.open and len(self.open) >= self.config.max_active:
            del self.open[next(iter(self.open))]
            self.dropped += 1
        self.open[key] = (ts, name)

    def maintain(self, now: float) -> None:
        """Drop buckets past retention, freeze past ones into arrays, forget stale open items."""
        oldest = math.floor((now - self.config.retention) / self.width)
        current = math.floor(now / self.width)
        with self._lock:
            for index in [i for i in self.buckets if i < oldest]:
                del self.buckets[index]
            for index, bucket in self.buckets.items():
                if index < current - 1 and not bucket.frozen:
                    bucket.freeze()
            cutoff = now - self.config.retention
            stale = [key for key, (ts, _) in self.open.items() if ts < cutoff]
            for key in stale:
                del self.open[key]

    def _copies(self, start: int, end: int) -> list[tuple[int, _Bucket]]:
        """The buckets in [start, end): frozen ones as they are, the few still filling copied."""
        return [(i, b if b.frozen else b.thaw()) for i, b in self.buckets.items() if start <= i < end]

    def series(self, window: float) -> tuple[float, list[tuple[float, _Bucket]]]:
        """(now, [(bucket start time, copy of the bucket)]) for the last `window` seconds, oldest first."""
        now = self.clock()
        end = math.floor(now / self.width) + 1
        with self._lock:
            chosen = self._copies(end - round(window / self.width), end)
        return now, [(i * self.width, b) for i, b in sorted(chosen, key=lambda pair: pair[0])]

    def snapshot(self, window: float, baseline: float) -> Snapshot:
        """The window (the last `window` seconds) and the baseline before it (up to `baseline`
        seconds back from now), as whole buckets; both must be multiples of the bucket width."""
        now = self.clock()
        width = self.width
        end = math.floor(now / width) + 1  # the bucket holding `now` belongs to the window
        split = end - round(window / width)
        start = end - round(baseline / width)
        with self._lock:
            chosen = self._copies(start, end)
            open_items = [OpenItem(kind, name, now - ts) for (kind, _), (ts, name) in self.open.items()]
            exact = self.dropped == 0
        periods = (Period(baseline - window), Period(window))
        for at, period in enumerate(periods):
            mine = [b for i, b in chosen if int(i >= split) == at]
            period.sums, period.durations = _sum_buckets(mine)
            if at:  # error kinds and failures per invocation are judged in the window only
                for bucket in mine:
                    period.errors.update(bucket.errors)
                    period.failures.update(bucket.failures)
        return Snapshot(window=periods[1], baseline=periods[0], open=open_items, as_of=now, exact=exact)


def _sum_buckets(buckets: list[_Bucket]) -> tuple[dict[Subject, list[float]], dict[Subject, np.ndarray]]:
    """Per-subject sums (one scatter-add per bucket) and all durations of these buckets."""
    index: dict[Subject, int] = {}
    rows = []
    chunks: dict[Subject, list[np.ndarray]] = {}
    for bucket in buckets:
        keys, table = bucket.rows()
        rows.append((np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.intp), table))
        for subject, values in bucket.durations.items():
            chunks.setdefault(subject, []).append(np.asarray(values, dtype=np.float64))
    total = np.zeros((len(index), len(FIELDS)))
    for idx, table in rows:
        total[idx] += table  # a subject appears once per bucket: no repeated index
    totals = total.tolist()
    sums = {subject: totals[j] for subject, j in index.items()}
    return sums, {s: np.concatenate(c) if len(c) > 1 else c[0] for s, c in chunks.items()}
