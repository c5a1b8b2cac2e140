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
    __slots__ = ("sums", "durations", "errors", "failures")

    def __init__(self) -> None:
        self.sums: dict[Subject, list[float]] = {}
        # lists while the bucket fills, frozen to arrays once it is past (see `freeze`)
        self.durations: dict[Subject, list[float] | np.ndarray] = {}
        self.errors: Counter[tuple[Subject, str]] = Counter()
        self.failures: Counter[Failure] = Counter()

    def freeze(self) -> None:
        for subject, values in self.durations.items():
            if isinstance(values, list):
                self.durations[subject] = np.array(values, dtype=np.float64)


@dataclass
class Period:
    """Sums over a span of buckets: what `sidecar.insights` judges (one for the window, one for the baseline)."""

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
                if index < current - 1:
                    bucket.freeze()
            cutoff = now - self.config.retention
            stale = [key for key, (ts, _) in self.open.items() if ts < cutoff]
            for key in stale:
                del self.open[key]

    def _copies(self, start: int, end: int) -> list[tuple[int, _Bucket]]:
        return [(i, _copy(b)) for i, b in self.buckets.items() if start <= i < end]

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
        parts: tuple[dict[Subject, list[np.ndarray]], dict[Subject, list[np.ndarray]]] = ({}, {})
        for i, bucket in chosen:
            at = int(i >= split)
            period = periods[at]
            for subject, sums in bucket.sums.items():
                have = period.sums.get(subject)
                if have is None:
                    period.sums[subject] = sums
                else:
                    for k, v in enumerate(sums):
                        have[k] += v
            for subject, values in bucket.durations.items():
                parts[at].setdefault(subject, []).append(np.asarray(values, dtype=np.float64))
            period.errors.update(bucket.errors)
            period.failures.update(bucket.failures)
        for period, chunks in zip(periods, parts):
            period.durations = {s: np.concatenate(c) if len(c) > 1 else c[0] for s, c in chunks.items()}
        return Snapshot(window=periods[1], baseline=periods[0], open=open_items, as_of=now, exact=exact)


def _copy(bucket: _Bucket) -> _Bucket:
    """What a query reads of one bucket: sums and the lists of a bucket still filling are copied;
    frozen arrays are shared (never written in place: a late event replaces the array)."""
    out = _Bucket()
    out.sums = {s: v[:] for s, v in bucket.sums.items()}
    out.durations = {s: (v[:] if isinstance(v, list) else v) for s, v in bucket.durations.items()}
    out.errors = bucket.errors.copy()
    out.failures = bucket.failures.copy()
    return out
