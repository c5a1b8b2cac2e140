"""Findings from a window and its baseline: pure functions, no I/O, no clock.

`find(snapshot, config)` applies one rule per kind (README, "Insights") to the sums the
insights store copied out. Each rule needs its minimum sample before it judges a subject,
so that small counts never fire. Severity: `warning` past a threshold, `critical` past
twice it; `info` marks an opportunity rather than a fault. Within a severity, findings
are ranked by impact: how far past its threshold the measure is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sidecar.config import InsightsConfig
from sidecar.sinks.insights import COST, ERRORS, EVENTS, FIELDS, INPUT, TOKEN_CALLS, Period, Snapshot, Subject

KINDS = (
    "slow", "latency_regression", "error_hotspot", "error_regression", "rate_limited", "cost_hotspot",
    "cost_regression", "token_bloat", "retry_storm", "stuck", "throughput_drop",
)
SEVERITIES = ("info", "warning", "critical")
SPAN_TYPES = ("llm.call", "tool.call")  # judged for slow and latency_regression
_RUN_ENDS = ("workflow.completed", "workflow.failed")
_DIMS = {"type": 0, "agent": 1, "workflow": 2, "model": 3}


@dataclass
class Finding:
    kind: str
    severity: str
    subject: dict[str, str]
    summary: str
    evidence: dict[str, Any]
    suggestion: str
    impact: float = 0.0  # the measure over its threshold; ranks findings of one severity

    def doc(self) -> dict[str, Any]:
        # a ratio over a zero reference is infinite, which JSON cannot carry: null
        evidence = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in self.evidence.items()}
        return {"kind": self.kind, "severity": self.severity, "subject": self.subject, "summary": self.summary,
                "evidence": evidence, "suggestion": self.suggestion}


@dataclass
class Result:
    findings: list[Finding]
    checked: dict[str, int] = field(default_factory=dict)


def find(snap: Snapshot, config: InsightsConfig) -> Result:
    """Every rule over the snapshot; findings ranked by severity, then impact."""
    result = Result([], {k: 0 for k in KINDS})
    for rule in RULES:
        rule(snap, config, result)
    result.findings.sort(key=lambda f: (-SEVERITIES.index(f.severity), -f.impact))
    return result


# -- helpers ------------------------------------------------------------------


def human_ms(ms: float) -> str:
    """A duration in the unit a person reads: 850 ms, 8.1 s, 2.3 min, 1.5 h."""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def p95(values: np.ndarray) -> float:
    """Exact nearest-rank 95th percentile (the rank /v1/stats uses)."""
    (value,) = nearest_rank_values(values, (95,))
    assert value is not None  # callers pass at least min_samples values
    return value


def nearest_rank_values(values: np.ndarray, percents: tuple[int, ...]) -> list[float | None]:
    """Exact nearest-rank percentiles (None for no values) by one partial selection, no sort."""
    n = len(values)
    if not n:
        return [None] * len(percents)
    ranks = [max(1, -(-p * n // 100)) - 1 for p in percents]
    return [float(v) for v in np.partition(values, ranks)[ranks]]


def _severity(measure: float, threshold: float) -> str:
    return "critical" if measure >= 2 * threshold else "warning"


def _subject(names: Iterable[str], values: Iterable[str | None]) -> dict[str, str]:
    return {n: v for n, v in zip(names, values) if v is not None}


def _label(subject: dict[str, str]) -> str:
    return " ".join(f"{k} {v}" for k, v in subject.items() if k != "type")


class Grouping:
    """A period's subjects as columns, made once per period: its sums as one table (a row per
    subject, in the dict's order), each dimension's values as small integer codes, and its
    durations' subjects by type. A rule's grouping is then a few numpy calls instead of a Python
    pass over every subject: at the cap (10,000 subjects) a compute groups ~24 times, and the
    passes were most of what the agent_insights gauge cost a scrape (BENCHMARKS.md, issue 17)."""

    def __init__(self, period: Period):
        self.subjects = list(period.sums)
        self.table = np.array(list(period.sums.values()), dtype=np.float64).reshape(len(self.subjects), len(FIELDS))
        self._codes: dict[int, tuple[np.ndarray, dict[str | None, int]]] = {}
        self.sums: dict[tuple[tuple[str, ...], tuple[str, ...] | None], dict[Group, list[float]]] = {}
        self.timed: dict[str, list[Subject]] = {}  # type -> the subjects with durations
        self._period_errors = period.errors  # not the period: it holds this object, and a cycle would wait for the collector
        self._errors: dict[tuple[tuple[str, ...], tuple[str, ...] | None], dict[Group, Counter[str]]] = {}
        for subject in period.durations:
            self.timed.setdefault(subject[0], []).append(subject)

    @staticmethod
    def of(period: Period) -> Grouping:
        if period.grouping is None:
            period.grouping = Grouping(period)
        grouping: Grouping = period.grouping
        return grouping

    def errors(self, dims: tuple[str, ...], types: tuple[str, ...] | None) -> dict[Group, Counter[str]]:
        """Error kinds by group, in one pass over the period's errors (kept per grouping)."""
        got = self._errors.get((dims, types))
        if got is None:
            idx = [_DIMS[d] for d in dims]
            got = self._errors[(dims, types)] = {}
            for (subject, error), count in self._period_errors.items():
                if types is None or subject[0] in types:
                    group = tuple(subject[i] for i in idx)
                    kinds = got.get(group)
                    if kinds is None:
                        kinds = got[group] = Counter()
                    kinds[error] += count
        return got

    def codes(self, dim: int) -> tuple[np.ndarray, dict[str | None, int]]:
        """Each subject's value of one dimension as a code, and the codes by value."""
        got = self._codes.get(dim)
        if got is None:
            index: dict[str | None, int] = {}
            codes = np.fromiter((index.setdefault(s[dim], len(index)) for s in self.subjects), np.intp, len(self.subjects))
            got = self._codes[dim] = (codes, index)
        return got


def _group_sums(period: Period, dims: tuple[str, ...], types: tuple[str, ...] | None = None) -> dict[Group, list[float]]:
    """The period's sums by the values of `dims` (of the subjects of `types`, or all), groups in the
    order of their first subject. Each group's numbers are added in subject order starting from
    zero, so they are the floats a pass adding subject by subject gives. Kept per period: the
    rules ask for the same groupings again; they only read the result."""
    grouping = Grouping.of(period)
    kept = grouping.sums.get((dims, types))
    if kept is not None:
        return kept
    rows: np.ndarray | None = None
    if types is not None:
        codes, index = grouping.codes(0)
        rows = np.flatnonzero(np.isin(codes, [index[t] for t in types if t in index]))
    key = np.zeros(len(grouping.subjects), np.intp)
    for d in dims:  # re-coded after each dimension, so the key stays below the number of subjects
        codes, index = grouping.codes(_DIMS[d])
        key = np.unique(key * len(index) + codes, return_inverse=True)[1].reshape(-1)
    table = grouping.table
    if rows is not None:
        key, table = key[rows], table[rows]
    out: dict[Group, list[float]] = {}
    if len(key):
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # groups in order of appearance
        rank = np.empty(len(order), np.intp)
        rank[order] = np.arange(len(order))
        group = rank[inverse.reshape(-1)]
        # bincount adds in input order: per group, the same additions as a subject-by-subject pass
        sums = np.column_stack([np.bincount(group, table[:, f], minlength=len(order)) for f in range(len(FIELDS))])
        firsts = first[order] if rows is None else rows[first[order]]
        idx = [_DIMS[d] for d in dims]
        subjects = grouping.subjects
        out = {tuple(subjects[r][i] for i in idx): v for r, v in zip(firsts.tolist(), sums.tolist())}
    grouping.sums[(dims, types)] = out
    return out


def _group_durations(period: Period, dims: tuple[str, ...], types: tuple[str, ...]) -> dict[tuple[str | None, ...], np.ndarray]:
    chunks: dict[tuple[str | None, ...], list[np.ndarray]] = {}
    idx = [_DIMS[d] for d in dims]
    timed = Grouping.of(period).timed
    durations = period.durations
    for t in types:
        for subject in timed.get(t, ()):
            chunks.setdefault(tuple(subject[i] for i in idx), []).append(durations[subject])
    return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in chunks.items()}


def _top_errors(period: Period, dims: tuple[str, ...], key: Group, types: tuple[str, ...] | None, n: int = 3) -> dict[str, int]:
    """The most frequent error kinds of one group (in the order a pass over the period's errors
    meets them, on a tie)."""
    return dict(Grouping.of(period).errors(dims, types).get(key, Counter()).most_common(n))


# Groupings judged per span type: by agent (any span), by model (LLM calls only).
_SPAN_GROUPS = (("agent",), ("model",))


def _span_groups(span_type: str) -> tuple[tuple[str, ...], ...]:
    return _SPAN_GROUPS if span_type == "llm.call" else (("agent",),)


# -- rules --------------------------------------------------------------------


Group = tuple[str | None, ...]


def _group_p95s(snap: Snapshot, role: str, dims: tuple[str, ...], span_type: str, least: int) -> dict[Group, tuple[np.ndarray, float]]:
    """Each group's durations of `span_type` and their exact p95 (NaN for a group of fewer than
    `least` values: no rule judges it, and at the cap most groups are such), kept in the store's
    `snap.kept` (see Snapshot) while the period's durations dict is the same object."""
    period = snap.window if role == "window" else snap.baseline
    kept = snap.kept.get((role, dims, span_type, least))
    if kept is not None and kept[0] is period.durations:
        return kept[1]
    groups = {k: (v, p95(v) if len(v) >= least else math.nan) for k, v in _group_durations(period, dims, (span_type,)).items()}
    snap.kept[(role, dims, span_type, least)] = (period.durations, groups)
    return groups


def _span_pairs(snap: Snapshot, c: InsightsConfig, against_peers: bool) -> Iterator[tuple[dict[str, str], np.ndarray, float, float, int]]:
    """(subject, window durations, their p95, reference p95, reference samples) for every span
    subject with its minimum sample on both sides; the reference is its peers in the window, or its
    own baseline."""
    least = c.min_samples
    for span_type in SPAN_TYPES:
        for dims in _span_groups(span_type):
            now = {k: v for k, v in _group_p95s(snap, "window", dims, span_type, least).items() if k[0] is not None}
            before = {} if against_peers else _group_p95s(snap, "baseline", dims, span_type, least)
            if against_peers and now:  # every group's durations end to end, so a group's peers are two slices
                everything = np.concatenate([v for v, _ in now.values()])
                ends = np.cumsum([len(v) for v, _ in now.values()]).tolist()
            for at, (key, (values, mine)) in enumerate(now.items()):
                if len(values) < least:
                    continue
                if against_peers:
                    start, end = ends[at] - len(values), ends[at]
                    reference = np.concatenate((everything[:start], everything[end:]))
                    n = len(reference)
                    theirs = p95(reference) if n >= least else 0.0
                else:
                    base, theirs = before.get(key, (np.empty(0), 0.0))
                    n = len(base)
                if n >= least:
                    yield {"type": span_type, **_subject(dims, key)}, values, mine, theirs, n


def _p95_past(values: np.ndarray, mine: float, theirs: float, ratio_threshold: float, c: InsightsConfig) -> tuple[float, float] | None:
    """(ratio, share of values above the reference p95) when all three thresholds are passed
    (`mine` and `theirs` are the two p95s), else None."""
    ratio = mine / theirs if theirs > 0 else float("inf")
    if ratio < ratio_threshold or mine - theirs < c.slow_min_ms:
        return None
    above = float(np.count_nonzero(values > theirs)) / len(values)
    if above < c.tail_share:
        return None
    return ratio, above


def slow(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    for subject, values, mine, theirs, peers in _span_pairs(snap, c, against_peers=True):
        out.checked["slow"] += 1
        past = _p95_past(values, mine, theirs, c.slow_ratio, c)
        if past is None:
            continue
        ratio, above = past
        span_type = subject["type"]
        out.findings.append(Finding(
            "slow", _severity(ratio, c.slow_ratio), subject,
            f"{span_type} p95 for {_label(subject)} is {human_ms(mine)}, {ratio:.1f}x its peers' {human_ms(theirs)}.",
            {"p95_ms": mine, "peers_p95_ms": theirs, "ratio": ratio, "share_above_peers_p95": above,
             "samples": len(values), "peer_samples": peers},
            f"Look at what {_label(subject)} calls differently: its slowest {span_type} spans (trace exemplars on "
            "agent_event_duration_seconds), timeouts, or a slower dependency.",
            ratio / c.slow_ratio,
        ))


def latency_regression(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    for subject, values, mine, then, base in _span_pairs(snap, c, against_peers=False):
        out.checked["latency_regression"] += 1
        past = _p95_past(values, mine, then, c.latency_ratio, c)
        if past is None:
            continue
        ratio, above = past
        out.findings.append(Finding(
            "latency_regression", _severity(ratio, c.latency_ratio), subject,
            f"{subject['type']} p95 for {_label(subject)} rose to {human_ms(mine)}, {ratio:.1f}x its baseline {human_ms(then)}.",
            {"p95_ms": mine, "baseline_p95_ms": then, "ratio": ratio, "share_above_baseline_p95": above,
             "samples": len(values), "baseline_samples": base},
            f"Something changed for {_label(subject)} within the window: a deploy, a provider incident, "
            "longer prompts or outputs; compare its recent traces with older ones.",
            ratio / c.latency_ratio,
        ))


_ERROR_GROUPS: tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...] = ((("agent",), None), (("model",), ("llm.call",)))


def error_hotspot(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    for dims, types in _ERROR_GROUPS:
        for key, sums in _group_sums(snap.window, dims, types).items():
            events, errors = sums[EVENTS], sums[ERRORS]
            if key[0] is None or events < c.min_events:
                continue
            out.checked["error_hotspot"] += 1
            rate = errors / events
            if rate < c.error_rate or errors < c.min_errors:
                continue
            subject = _subject(dims, key)
            top = _top_errors(snap.window, dims, key, types)
            what = "LLM calls" if types else "events"
            out.findings.append(Finding(
                "error_hotspot", _severity(rate, c.error_rate), subject,
                f"{rate:.0%} of {what} for {_label(subject)} fail ({int(errors)} of {int(events)}), mostly {next(iter(top), 'unknown')}.",
                {"error_rate": rate, "errors": int(errors), "events": int(events), "top_errors": top},
                f"Fix or route around the main error ({next(iter(top), 'unknown')}): a fallback model, input validation, or a circuit breaker.",
                rate / c.error_rate,
            ))


def error_regression(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    for dims, types in _ERROR_GROUPS:
        before = _group_sums(snap.baseline, dims, types)
        for key, sums in _group_sums(snap.window, dims, types).items():
            base = before.get(key)
            if key[0] is None or base is None or sums[EVENTS] < c.min_events or base[EVENTS] < c.min_events:
                continue
            out.checked["error_regression"] += 1
            rate, then = sums[ERRORS] / sums[EVENTS], base[ERRORS] / base[EVENTS]
            ratio = rate / then if then > 0 else float("inf")
            if sums[ERRORS] < c.min_errors or ratio < c.error_ratio or rate - then < c.error_rise:
                continue
            subject = _subject(dims, key)
            top = _top_errors(snap.window, dims, key, types)
            out.findings.append(Finding(
                "error_regression", _severity(min(ratio, 1e9), c.error_ratio), subject,
                f"The error rate for {_label(subject)} rose to {rate:.0%} from {then:.0%} in the baseline, mostly {next(iter(top), 'unknown')}.",
                {"error_rate": rate, "baseline_error_rate": then, "errors": int(sums[ERRORS]), "events": int(sums[EVENTS]),
                 "baseline_errors": int(base[ERRORS]), "baseline_events": int(base[EVENTS]), "top_errors": top},
                "Check what changed when the errors started (a deploy, a provider incident, a new input source).",
                min(ratio, 1e9) / c.error_ratio,
            ))


def rate_limited(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    limited: Counter[str] = Counter()
    for (subject, error), count in snap.window.errors.items():
        if subject[0] == "llm.call" and subject[3] is not None and error in c.rate_limit_errors:
            limited[subject[3]] += count
    total = sum(limited.values())
    for (model,), sums in _group_sums(snap.window, ("model",), ("llm.call",)).items():
        calls = sums[EVENTS]
        if model is None or calls < c.min_events:
            continue
        out.checked["rate_limited"] += 1
        count = limited[model]
        share = count / calls
        if share < c.rate_limit_share or count < c.min_errors:
            continue
        out.findings.append(Finding(
            "rate_limited", _severity(share, c.rate_limit_share), {"model": model},
            f"{share:.0%} of LLM calls to {model} are rate limited ({count} of {int(calls)}; {count / total:.0%} of all rate limits).",
            {"rate_limited": count, "calls": int(calls), "share": share, "share_of_rate_limits": count / total},
            f"Raise the rate limit for {model}, spread load across keys or models, or add client-side pacing with jittered backoff.",
            share / c.rate_limit_share,
        ))


def cost_hotspot(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    for dims in (("agent",), ("model",)):
        now = _group_sums(snap.window, dims)
        before = _group_sums(snap.baseline, dims)
        total = sum(s[COST] for s in now.values())
        base_total = sum(s[COST] for s in before.values())
        if total <= 0 or sum(s[EVENTS] for s in now.values()) < c.min_events:
            continue
        for key, sums in now.items():
            if key[0] is None:
                continue
            out.checked["cost_hotspot"] += 1
            share = sums[COST] / total
            if share < c.cost_share:
                continue
            then = before[key][COST] / base_total if key in before and base_total > 0 else None
            rose = then is not None and share - then >= c.cost_share_rise
            subject = _subject(dims, key)
            since = f" (baseline: {then:.0%})" if then is not None else ""
            out.findings.append(Finding(
                "cost_hotspot", "warning" if rose else "info", subject,
                f"{_label(subject)} accounts for {share:.0%} of spend (${sums[COST]:.2f} of ${total:.2f}){since}.",
                {"cost_usd": sums[COST], "total_cost_usd": total, "share": share, "baseline_share": then, "events": int(sums[EVENTS])},
                f"Try a cheaper model or shorter prompts for {_label(subject)} (prompt caching, trimming context), "
                "or check why its share of spend changed.",
                share / c.cost_share,
            ))


def _ended_runs(period: Period) -> dict[str | None, float]:
    return {k[0]: v[EVENTS] for k, v in _group_sums(period, ("workflow",), _RUN_ENDS).items()}


def cost_regression(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    now_runs, base_runs = _ended_runs(snap.window), _ended_runs(snap.baseline)
    now_cost, base_cost = _group_sums(snap.window, ("workflow",)), _group_sums(snap.baseline, ("workflow",))
    for workflow, runs in now_runs.items():
        then_runs = base_runs.get(workflow, 0.0)
        if workflow is None or runs < c.min_runs or then_runs < c.min_runs:
            continue
        out.checked["cost_regression"] += 1
        per_run = now_cost[(workflow,)][COST] / runs
        then = base_cost.get((workflow,), [0.0] * len(FIELDS))[COST] / then_runs
        ratio = per_run / then if then > 0 else float("inf")
        if then <= 0 or ratio < c.cost_ratio:
            continue
        out.findings.append(Finding(
            "cost_regression", _severity(ratio, c.cost_ratio), {"workflow": workflow},
            f"A {workflow} run costs ${per_run:.3f}, {ratio:.1f}x the baseline's ${then:.3f}.",
            {"cost_per_run_usd": per_run, "baseline_cost_per_run_usd": then, "ratio": ratio, "runs": int(runs), "baseline_runs": int(then_runs)},
            f"Find which agent or model of {workflow} spends more per run (cost_hotspot, token_bloat) and what changed.",
            ratio / c.cost_ratio,
        ))


def token_bloat(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    before = _group_sums(snap.baseline, ("agent",), ("llm.call",))
    for key, sums in _group_sums(snap.window, ("agent",), ("llm.call",)).items():
        base = before.get(key)
        if key[0] is None or base is None or sums[TOKEN_CALLS] < c.min_samples or base[TOKEN_CALLS] < c.min_samples:
            continue
        out.checked["token_bloat"] += 1
        per_call, then = sums[INPUT] / sums[TOKEN_CALLS], base[INPUT] / base[TOKEN_CALLS]
        ratio = per_call / then if then > 0 else float("inf")
        if then <= 0 or ratio < c.token_ratio:
            continue
        subject = {"agent": str(key[0])}
        out.findings.append(Finding(
            "token_bloat", _severity(ratio, c.token_ratio), subject,
            f"LLM calls by agent {key[0]} send {per_call:,.0f} input tokens each, {ratio:.1f}x the baseline's {then:,.0f}.",
            {"input_tokens_per_call": per_call, "baseline_input_tokens_per_call": then, "ratio": ratio,
             "calls": int(sums[TOKEN_CALLS]), "baseline_calls": int(base[TOKEN_CALLS])},
            f"The context of {key[0]} is growing: summarise or trim history, cap retrieved documents, cache the stable prefix.",
            ratio / c.token_ratio,
        ))


def retry_storm(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    storms: dict[str | None, list[int]] = {}
    models: dict[str | None, Counter[str]] = {}
    for storm in snap.storms:
        storms.setdefault(storm.agent, []).append(storm.failures)
        if storm.model is not None:
            models.setdefault(storm.agent, Counter())[storm.model] += 1
    # subjects examined: the agents with any failure in the window
    out.checked["retry_storm"] += len({k[0] for k, v in _group_sums(snap.window, ("agent",)).items() if v[ERRORS]})
    for agent, counts in storms.items():
        if len(counts) < c.retry_storms:
            continue
        subject = _subject(("agent",), (agent,)) or {"agent": "(none)"}
        top_model = models.get(agent, Counter()).most_common(1)
        on = f" on {top_model[0][0]}" if top_model else ""
        out.findings.append(Finding(
            "retry_storm", _severity(len(counts), c.retry_storms), subject,
            f"{len(counts)} invocations of {_label(subject)} failed and retried {c.retry_failures} or more times each{on} "
            f"(up to {max(counts)}).",
            {"storms": len(counts), "max_failures": max(counts), "failures": sum(counts), "threshold": c.retry_failures},
            "Cap retries, back off exponentially with jitter, and stop retrying errors that will not go away.",
            len(counts) / c.retry_storms,
        ))


_NO_AGES = np.empty(0)
_STUCK = (("run", "workflow", "workflow.completed", "workflow"), ("invocation", "agent", "agent.completed", "agent"))


def stuck(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    for kind, dim, done_type, noun in _STUCK:
        ended = {**_group_sums(snap.baseline, (dim,), (done_type, done_type.replace("completed", "failed")))}
        for key, sums in _group_sums(snap.window, (dim,), (done_type, done_type.replace("completed", "failed"))).items():
            ended[key] = [a + b for a, b in zip(ended.get(key, [0.0] * len(FIELDS)), sums)]
        durations = {**_group_durations(snap.baseline, (dim,), (done_type,))}
        for key, values in _group_durations(snap.window, (dim,), (done_type,)).items():
            durations[key] = np.concatenate((durations[key], values)) if key in durations else values
        span = snap.window.seconds + snap.baseline.seconds
        for key, sums in ended.items():
            name = key[0]
            took = durations.get(key)
            if name is None or sums[EVENTS] < c.min_runs or took is None or len(took) < c.min_runs:
                continue
            out.checked["stuck"] += 1
            usual = p95(took)
            limit = c.stuck_factor * usual / 1000
            ages = snap.open.get((kind, name), _NO_AGES)
            overdue = ages[(ages > limit) & (ages <= span)]
            share = len(overdue) / sums[EVENTS]
            if len(overdue) < c.stuck_min or share < c.stuck_share:
                continue
            subject = {dim: name}
            out.findings.append(Finding(
                "stuck", _severity(share, c.stuck_share), subject,
                f"{len(overdue)} {kind}s of {noun} {name} have been open longer than {human_ms(limit * 1000)} "
                f"({c.stuck_factor:g}x their usual {human_ms(usual)}), the oldest for {human_ms(float(overdue.max()) * 1000)}.",
                {"overdue": len(overdue), "ended": int(sums[EVENTS]), "share": share, "usual_p95_ms": usual,
                 "limit_ms": limit * 1000, "oldest_ms": float(overdue.max()) * 1000},
                f"Find where these {kind}s hang (the last event of each in the tail): a call without a timeout, "
                "a lost callback, or a process that died without reporting.",
                share / c.stuck_share,
            ))


def abandoned(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    """The other half of `stuck`: runs abandoned (no end within lifecycle.abandon_after) rising, as
    a share of the workflow's runs that reached an outcome, against the baseline."""
    if not snap.abandon_complete:
        return  # the baseline would miss the runs that started before the store saw any event
    now_ended, base_ended = _ended_runs(snap.window), _ended_runs(snap.baseline)
    for workflow in sorted({*now_ended, *snap.window.abandoned} - {None}, key=str):
        gone, then_gone = snap.window.abandoned[workflow], snap.baseline.abandoned[workflow]
        runs, then_runs = gone + now_ended.get(workflow, 0.0), then_gone + base_ended.get(workflow, 0.0)
        if runs < c.min_runs or then_runs < c.min_runs:
            continue
        out.checked["stuck"] += 1
        share, then = gone / runs, then_gone / then_runs
        ratio = share / then if then > 0 else float("inf")
        if gone < c.abandon_min or ratio < c.abandon_ratio or share - then < c.abandon_rise:
            continue
        out.findings.append(Finding(
            "stuck", _severity(min(ratio, 1e9), c.abandon_ratio), {"workflow": str(workflow)},
            f"{gone} runs of workflow {workflow} were abandoned (no end within {human_ms(snap.abandon_after * 1000)}), "
            f"{share:.0%} of its runs against {then:.0%} in the baseline.",
            {"abandoned": gone, "runs": int(runs), "share": share, "baseline_abandoned": then_gone,
             "baseline_runs": int(then_runs), "baseline_share": then, "ratio": ratio, "abandon_after_ms": snap.abandon_after * 1000},
            f"Runs of {workflow} stop reporting part-way more often than before: look at the last event of "
            "abandoned runs in the tail (a crash, a killed worker, a lost end event).",
            min(ratio, 1e9) / c.abandon_ratio,
        ))


def throughput_drop(snap: Snapshot, c: InsightsConfig, out: Result) -> None:
    now = {k[0]: v[EVENTS] for k, v in _group_sums(snap.window, ("workflow",), ("workflow.completed",)).items()}
    before = {k[0]: v[EVENTS] for k, v in _group_sums(snap.baseline, ("workflow",), ("workflow.completed",)).items()}
    if snap.baseline.seconds <= 0:
        return
    for workflow, then in before.items():
        expected = then / snap.baseline.seconds * snap.window.seconds
        if workflow is None or then < c.min_runs or expected < c.min_runs:
            continue
        out.checked["throughput_drop"] += 1
        got = now.get(workflow, 0.0)
        ratio = got / expected
        if ratio > c.throughput_ratio:
            continue
        per_min, then_per_min = got / snap.window.seconds * 60, then / snap.baseline.seconds * 60
        out.findings.append(Finding(
            "throughput_drop", "critical" if ratio <= c.throughput_ratio / 2 else "warning", {"workflow": workflow},
            f"{workflow} completes {per_min:.1f} runs per minute, {ratio:.0%} of the baseline's {then_per_min:.1f}.",
            {"completed": int(got), "baseline_completed": int(then), "runs_per_minute": per_min,
             "baseline_runs_per_minute": then_per_min, "ratio": ratio},
            f"Check whether {workflow} runs are stuck, failing or no longer being started (stuck, error findings).",
            c.throughput_ratio / max(ratio, 1e-9),
        ))


RULES: tuple[Callable[[Snapshot, InsightsConfig, Result], None], ...] = (
    slow, latency_regression, error_hotspot, error_regression, rate_limited, cost_hotspot,
    cost_regression, token_bloat, retry_storm, stuck, abandoned, throughput_drop,
)
