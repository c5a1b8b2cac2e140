"""`agent-sidecar demo`: a realistic stream of concurrent multi-agent workflows.

A small discrete-event simulation (stdlib only). `--workflows` runs are in flight at
once; each run walks a pipeline of agents (planner -> researcher -> coder -> reviewer),
every agent makes LLM calls (tokens and cost by model) and tool calls, with rate-limit
retries, timeouts, failures, review loops and runs that are simply abandoned (the
process "crashed" and never reported the end). The events come out in simulated-time
order and are written at exactly `--rate` lines per second, so a dashboard fills at a
predictable pace and `--rate R --duration S` sends exactly R*S lines.

Simulated durations (`duration_ms`) are realistic LLM latencies; the stream is paced
by `--rate`, so simulated time may run faster or slower than the wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.client.senders import ClientError, HttpSender, Notify, UnixSender
from sidecar.config import ListenConfig, WindowsConfig, format_duration, parse_duration

TICK = 0.05  # seconds between writes
MAX_CHUNK = 5000  # lines per write when behind schedule
GRACE = 1.0  # seconds past --duration a sender that is behind may take
MAX_HISTORY = max(WindowsConfig().durations)

Event = dict[str, Any]

# USD per million tokens (input, output); list prices at the time of writing.
MODELS = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
}


@dataclass(frozen=True)
class AgentProfile:
    models: tuple[tuple[str, float], ...]  # (model, weight)
    steps: tuple[int, int]  # LLM calls per invocation (min, max)
    input_tokens: float  # median prompt size
    output_tokens: float  # median completion size
    tools: tuple[str, ...]


AGENTS = {
    "planner": AgentProfile((("claude-3-5-sonnet", 0.7), ("gpt-4o", 0.3)), (1, 2), 1800, 450, ()),
    "researcher": AgentProfile((("gpt-4o-mini", 0.8), ("claude-3-5-haiku", 0.2)), (2, 5), 6000, 300, ("web_search", "fetch_url")),
    "coder": AgentProfile((("claude-3-5-sonnet", 0.6), ("gpt-4o", 0.4)), (2, 6), 9000, 900, ("read_file", "run_tests", "apply_patch")),
    "reviewer": AgentProfile((("claude-3-5-haiku", 0.6), ("gpt-4o-mini", 0.4)), (1, 2), 7000, 250, ("read_file",)),
}

# workflow -> (agent pipeline, weight)
WORKFLOWS = {
    "code-change": (("planner", "researcher", "coder", "reviewer"), 0.5),
    "research-report": (("planner", "researcher", "reviewer"), 0.3),
    "bug-triage": (("planner", "coder", "reviewer"), 0.2),
}

LLM_TIMEOUT = 30.0  # seconds; a timed-out call reports this duration
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Odds:
    """How often things go wrong (probabilities per occasion)."""

    rate_limited: float = 0.04  # per LLM attempt
    timeout: float = 0.015  # per LLM attempt
    fatal: float = 0.006  # per LLM attempt: not retried, the agent fails (e.g. context too long)
    tool_error: float = 0.03  # per tool call
    changes_requested: float = 0.25  # the reviewer sends the work back to the coder once
    abandon: float = 0.03  # per run: stops reporting part-way through


@dataclass(frozen=True)
class Scenario:
    """One named fault injected into the simulation (all fields off: `healthy`).

    `onset` is simulated seconds from the start; faults marked "from onset" begin then (a
    regression that starts mid-run), the others apply from the first event. Every fault
    draws from the simulation's own random stream only when it applies, so `healthy`
    gives exactly the stream the demo gave before scenarios existed.
    """

    name: str = "healthy"
    tool_slowdown: tuple[str, float] | None = None  # (agent, factor): that agent's tool calls
    model_failure: tuple[str, float, str] | None = None  # (model, probability, error): fatal per attempt
    model_rate_limit: tuple[str, float] | None = None  # (model, probability) per attempt
    cost_hog: tuple[str, str, float] | None = None  # (agent, model, input-token factor), from onset
    model_slowdown: tuple[str, float] | None = None  # (model, factor) on LLM latency, from onset
    token_growth: tuple[str, float] | None = None  # (agent, final factor): input tokens grow from onset
    retry_storm: tuple[str, float, int, int] | None = None  # (agent, probability per invocation, min, max failures)
    hang: tuple[str, float] | None = None  # (workflow, probability per run): the run stalls, never ends
    abandon: tuple[str, float] | None = None  # (workflow, probability per run), from onset: stops part-way, never ends
    onset: float = 0.0
    expect: tuple[str, tuple[tuple[str, str], ...]] | None = None  # the finding (kind, subject) that names the fault

    def started(self, now: float) -> bool:
        return now >= self.onset


# What each scenario injects, and the finding that must name it (see README, "Insights").
SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario(),
    "slow_tool": Scenario("slow_tool", tool_slowdown=("researcher", 10.0), expect=("slow", (("type", "tool.call"), ("agent", "researcher")))),
    "failing_model": Scenario("failing_model", model_failure=("gpt-4o-mini", 0.3, "server_error"), expect=("error_hotspot", (("model", "gpt-4o-mini"),))),
    "rate_limited": Scenario("rate_limited", model_rate_limit=("claude-3-5-sonnet", 0.45), expect=("rate_limited", (("model", "claude-3-5-sonnet"),))),
    "cost_hog": Scenario("cost_hog", cost_hog=("reviewer", "gpt-4o", 6.0), expect=("cost_hotspot", (("agent", "reviewer"),))),
    "latency_regression": Scenario("latency_regression", model_slowdown=("gpt-4o", 4.0), expect=("latency_regression", (("type", "llm.call"), ("model", "gpt-4o")))),
    "token_bloat": Scenario("token_bloat", token_growth=("coder", 4.0), expect=("token_bloat", (("agent", "coder"),))),
    "retry_storm": Scenario("retry_storm", retry_storm=("coder", 0.25, 8, 15), expect=("retry_storm", (("agent", "coder"),))),
    "stuck_runs": Scenario("stuck_runs", hang=("research-report", 0.4), expect=("stuck", (("workflow", "research-report"),))),
    # judged with a short lifecycle.abandon_after (README, "Named faults"): an hour is longer than a demo
    "abandoned_runs": Scenario("abandoned_runs", abandon=("code-change", 0.5), expect=("stuck", (("workflow", "code-change"),))),
}


def scenario(name: str, onset: float = 0.0) -> Scenario:
    """The named scenario with its onset (simulated seconds); KeyError for an unknown name."""
    return dataclasses.replace(SCENARIOS[name], onset=onset)


class Simulation:
    """Yields event dicts in simulated-time order from `workflows` concurrent runs.

    `now` is simulated seconds since the start; `started` and `outcomes` count runs.
    """

    def __init__(self, seed: int | None = None, workflows: int = 8, odds: Odds = Odds(), fault: Scenario = Scenario()):
        self.rng = random.Random(seed)
        self.odds = odds
        self.fault = fault
        self.now = 0.0
        self.started = 0
        self.outcomes = {"completed": 0, "failed": 0, "abandoned": 0}
        self._seq = 0
        self._heap: list[tuple[float, int, Event, Iterator[tuple[float, Event]]]] = []
        for _ in range(workflows):
            self._start(self.rng.uniform(0, 2))  # stagger the first runs

    def _id(self, bits: int = 64) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _push(self, run: Iterator[tuple[float, Event]]) -> None:
        for at, ev in run:
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, ev, run))
            return
        self._start(self.now)  # the run ended: another takes its slot

    def _start(self, at: float) -> None:
        self.started += 1
        self._push(self._run(at))

    def __iter__(self) -> Iterator[Event]:
        return self

    def next_at(self) -> float:
        """Simulated time of the next event."""
        return self._heap[0][0]

    def __next__(self) -> Event:
        at, _, ev, run = heapq.heappop(self._heap)
        self.now = at
        self._push(run)
        return ev

    # -- one workflow run ------------------------------------------------------

    def _run(self, t: float) -> Iterator[tuple[float, Event]]:
        rng, odds = self.rng, self.odds
        workflow = rng.choices(list(WORKFLOWS), [w for _, w in WORKFLOWS.values()])[0]
        pipeline = list(WORKFLOWS[workflow][0])
        run = {"workflow": workflow, "run_id": f"run-{self._id()}", "trace_id": self._id(128), "session_id": f"sess-{self._id(32)}"}
        # An abandoned run stops after a random number of calls (at the latest before its end)
        # and never reports its end.
        abandon = rng.random() < odds.abandon
        budget = rng.randint(1, 30) if abandon else math.inf
        hang = self.fault.hang
        if not abandon and hang is not None and workflow == hang[0] and rng.random() < hang[1]:
            abandon, budget = True, rng.randint(3, 30)  # stalls like an abandoned run: no end is ever sent
        gone = self.fault.abandon
        if not abandon and gone is not None and workflow == gone[0] and self.fault.started(t) and rng.random() < gone[1]:
            abandon, budget = True, rng.randint(1, 30)  # as the odds' abandoned runs, only more of them
        start = t
        reviewed = False
        yield t, {"type": "workflow.started", **run}
        i = 0
        while i < len(pipeline):
            agent = pipeline[i]
            invocation = {"agent": agent, **run, "invocation_id": f"inv-{self._id()}"}
            yield t, {"type": "agent.invoked", **invocation}
            began = t
            error = None
            for call in self._agent_calls(agent, invocation, t):
                t, ev = call
                budget -= 1
                if budget <= 0:
                    self.outcomes["abandoned"] += 1
                    return
                yield t, ev
                if ev["type"] == "llm.call" and ev.get("severity") == "error":
                    error = ev["error"]
            took = _ms(t - began)
            if abandon and (error is not None or i == len(pipeline) - 1):
                self.outcomes["abandoned"] += 1
                return
            if error is not None:
                yield t, {"type": "agent.failed", **invocation, "duration_ms": took, "error": error}
                yield t, {"type": "workflow.failed", **run, "duration_ms": _ms(t - start), "error": error}
                self.outcomes["failed"] += 1
                return
            yield t, {"type": "agent.completed", **invocation, "duration_ms": took}
            if agent == "reviewer" and not reviewed and "coder" in pipeline and rng.random() < odds.changes_requested:
                reviewed = True
                i = pipeline.index("coder")  # changes requested: back to the coder, once
                continue
            i += 1
        yield t, {"type": "workflow.completed", **run, "duration_ms": _ms(t - start)}
        self.outcomes["completed"] += 1

    def _agent_calls(self, agent: str, invocation: Event, t: float) -> Iterator[tuple[float, Event]]:
        """LLM calls (with retries) and tool calls of one invocation; stops after a failed call."""
        rng, odds, fault = self.rng, self.odds, self.fault
        profile = AGENTS[agent]
        model = rng.choices([m for m, _ in profile.models], [w for _, w in profile.models])[0]
        tokens_in = profile.input_tokens
        if fault.cost_hog is not None and fault.cost_hog[0] == agent and fault.started(t):
            model, tokens_in = fault.cost_hog[1], tokens_in * fault.cost_hog[2]
        if fault.token_growth is not None and fault.token_growth[0] == agent and fault.started(t):
            # context grows with time since onset, up to the factor after five simulated minutes
            tokens_in *= 1 + (fault.token_growth[1] - 1) * min(1.0, (t - fault.onset) / 300)
        storm = 0
        if fault.retry_storm is not None and fault.retry_storm[0] == agent and rng.random() < fault.retry_storm[1]:
            storm = rng.randint(fault.retry_storm[2], fault.retry_storm[3])  # failures before the first success
        for _ in range(rng.randint(*profile.steps)):
            while storm > 0:
                storm -= 1
                took = rng.uniform(0.2, 1.0)
                t += took
                yield t, {"type": "llm.call", **invocation, "model": model, "span_id": self._id(), "duration_ms": _ms(took),
                          "success": False, "error": "server_error", "severity": "warning"}
                t += rng.uniform(0.5, 2.0)  # a retry loop without backoff growth
            for attempt in range(1, MAX_ATTEMPTS + 1):
                last = attempt == MAX_ATTEMPTS
                roll = rng.random()
                base = {"type": "llm.call", **invocation, "model": model, "span_id": self._id(), "attempt": attempt}
                fatal, fatal_error = odds.fatal, "context_length_exceeded"
                if fault.model_failure is not None and fault.model_failure[0] == model:
                    fatal, fatal_error = fault.model_failure[1], fault.model_failure[2]
                rate_limited = odds.rate_limited
                if fault.model_rate_limit is not None and fault.model_rate_limit[0] == model:
                    rate_limited = fault.model_rate_limit[1]
                if roll < fatal:
                    took = rng.uniform(0.1, 0.5)
                    t += took
                    yield t, {**base, "duration_ms": _ms(took), "success": False, "error": fatal_error, "severity": "error"}
                    return
                roll -= fatal
                if roll < rate_limited + odds.timeout:
                    kind = "rate_limited" if roll < rate_limited else "timeout"
                    took = rng.uniform(0.05, 0.4) if kind == "rate_limited" else LLM_TIMEOUT
                    t += took
                    yield t, {**base, "duration_ms": _ms(took), "success": False, "error": kind,
                              "severity": "error" if last else "warning"}
                    if last:
                        return
                    t += 2.0**attempt * rng.uniform(0.5, 1.0)  # backoff before the retry
                    continue
                inp = int(rng.lognormvariate(math.log(tokens_in), 0.5))
                out = max(1, int(rng.lognormvariate(math.log(profile.output_tokens), 0.6)))
                took = rng.uniform(0.25, 0.8) + out / rng.uniform(40, 110)  # first token + generation
                if fault.model_slowdown is not None and fault.model_slowdown[0] == model and fault.started(t):
                    took *= fault.model_slowdown[1]
                t += took
                price_in, price_out = MODELS[model]
                yield t, {**base, "duration_ms": _ms(took), "input_tokens": inp, "output_tokens": out,
                          "cost_usd": round((inp * price_in + out * price_out) / 1e6, 8)}
                break
            if profile.tools and rng.random() < 0.7:
                tool = rng.choice(profile.tools)
                took = rng.lognormvariate(math.log(0.4), 0.9)
                if fault.tool_slowdown is not None and fault.tool_slowdown[0] == agent:
                    took *= fault.tool_slowdown[1]
                t += took
                ev = {"type": "tool.call", **invocation, "tool": tool, "span_id": self._id(), "duration_ms": _ms(took)}
                if rng.random() < odds.tool_error:
                    ev.update(success=False, error="tool_error", severity="warning")
                yield t, ev


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# Lines a misbehaving client might send; the sidecar rejects each with a reason.
INVALID_LINES = (
    b'{"agent": "coder", "duration_ms": 12}',  # missing_type
    b'{"type": "llm.call", "input_tokens": -5}',  # invalid_field
    b"{not json",  # invalid_json
)


# -- transports ------------------------------------------------------------------


class Target(Protocol):
    def send(self, lines: list[bytes]) -> None: ...


class UnixTarget:
    """One long-lived connection to the ingest socket (waits up to `wait` s for it to appear)."""

    def __init__(self, path: str, wait: float, notify: Notify | None = None):
        self.name = f"unix:{path}"
        self.sender = UnixSender.wait_for(path, wait, notify=notify)

    def send(self, lines: list[bytes]) -> None:
        self.sender.send(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        self.sender.finish()  # returns once the sidecar has read every line

    def abandon(self) -> None:
        self.sender.close()


class HttpTarget:
    """POSTs each tick's lines as one NDJSON batch; a 503 is retried `retries` times, then `Overloaded`."""

    def __init__(self, url: str, token: str | None, retries: int, notify: Notify | None = None):
        self.name = url
        self.sender = HttpSender(url, token)
        self.retries = retries
        self.notify = notify

    def send(self, lines: list[bytes]) -> None:
        # per-line rejections are the sidecar's to count
        self.sender.send(b"\n".join(lines), retries=self.retries, notify=self.notify)

    def close(self) -> None:
        self.sender.close()

    abandon = close


# -- the command ------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="send a realistic stream of concurrent agent workflows",
        description="Simulate concurrent multi-agent workflows (LLM and tool calls, tokens, cost, retries, "
        "failures, timeouts, abandoned runs) and stream their events into a sidecar.",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--unix", metavar="PATH", help=f"Unix socket (default {ListenConfig.unix})")
    target.add_argument("--url", metavar="URL", help="sidecar base URL, e.g. http://127.0.0.1:8765 (POSTs batches)")
    p.add_argument("--token", help="bearer token for --url")
    p.add_argument("--rate", type=_positive, default=50.0, metavar="N", help="lines per second (default 50)")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (default 0: until Ctrl-C)")
    p.add_argument("--workflows", type=int, default=8, metavar="N", help="concurrent workflow runs (default 8)")
    p.add_argument("--invalid", type=float, default=0.002, metavar="FRACTION",
                   help="fraction of lines sent malformed, to show rejects (default 0.002)")
    p.add_argument("--abandon", type=float, default=Odds.abandon, metavar="FRACTION",
                   help=f"fraction of runs that never report their end (default {Odds.abandon})")
    p.add_argument("--seed", type=int, help="random seed, for a reproducible stream")
    p.add_argument("--scenario", choices=list(SCENARIOS), default="healthy",
                   help="inject a named fault (default healthy); `agent-sidecar insights` should then name it")
    p.add_argument("--history", type=_history, default=0.0, metavar="D",
                   help="first send D (e.g. 20m) of simulated history stamped back in time, as fast as the sidecar takes it "
                   "(at most the largest window), so windows and insights have data at once (default 0)")
    p.add_argument("--onset", type=_duration, default=None, metavar="D",
                   help="simulated time at which faults that start mid-run begin (default: 3/4 of --history, or 5m)")
    p.add_argument("--wait", type=float, default=30.0, metavar="S", help="wait up to S seconds for the socket to appear (default 30)")
    p.add_argument("--retries", type=int, default=30, metavar="N",
                   help="with --url: retry a batch the overloaded sidecar refuses (503) N times, then stop (default 30)")
    p.set_defaults(func=main)


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return number


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _history(value: str) -> float:
    seconds = _duration(value)
    if seconds > MAX_HISTORY:
        raise argparse.ArgumentTypeError(f"must be at most {format_duration(MAX_HISTORY)}: older events fall outside every default window")
    return seconds


def history(sim: Simulation, span: float, end: float) -> Iterator[bytes]:
    """The simulation's first `span` simulated seconds as lines stamped so that they end at `end`:
    simulated time is event time here, so durations and timestamps agree."""
    start = end - span
    while sim.next_at() < span:
        ev = next(sim)
        ev["timestamp"] = round(start + sim.now, 3)
        yield json.dumps(ev, separators=(",", ":")).encode()


def stream(sim: Simulation, rng: random.Random, invalid: float) -> Iterator[tuple[bytes, bool]]:
    """(line, is_invalid) pairs: the simulation's events, stamped now, with some malformed lines mixed in."""
    for ev in sim:
        if invalid and rng.random() < invalid:
            yield rng.choice(INVALID_LINES), True
        ev["timestamp"] = round(time.time(), 3)
        yield json.dumps(ev, separators=(",", ":")).encode(), False


@dataclass
class Progress:
    sent: int = 0
    invalid: int = 0
    stopping: bool = False  # set by SIGINT/SIGTERM; the loop stops between writes


def pace(target: Target, lines: Iterator[tuple[bytes, bool]], rate: float, duration: float, progress: Progress) -> None:
    """Write lines at `rate` per second for `duration` seconds (0: forever): exactly rate*duration
    lines when the sender keeps up. A sender that cannot keep up writes as fast as it can (in
    chunks of at most MAX_CHUNK lines) and stops GRACE seconds after `duration`."""
    total = int(rate * duration) if duration else math.inf
    start = time.monotonic()
    while progress.sent < total and not progress.stopping:
        elapsed = time.monotonic() - start
        if duration and elapsed > duration + GRACE:
            break
        due = int(min(total, int(rate * elapsed) + 1)) - progress.sent
        if due > 0:
            chunk = [next(lines) for _ in range(min(due, MAX_CHUNK))]
            target.send([line for line, _ in chunk])
            progress.sent += len(chunk)
            progress.invalid += sum(1 for _, invalid in chunk if invalid)
        if due <= MAX_CHUNK and progress.sent < total and not progress.stopping:
            time.sleep(TICK)


def _chunks(lines: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _say(message: str) -> None:
    print(f"agent-sidecar demo: {message}", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    """Stream until --duration, Ctrl-C or a send error; the summary line is printed in every case,
    then an error goes up to cli.main, which names it and exits 1."""
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    onset = args.onset if args.onset is not None else (args.history * 0.75 if args.history else 300.0)
    sim = Simulation(seed, max(1, args.workflows), Odds(abandon=args.abandon), scenario(args.scenario, onset))
    started = time.monotonic()
    progress = Progress()
    target: UnixTarget | HttpTarget
    if args.url:
        target = HttpTarget(args.url, args.token, args.retries, _say)
    else:
        target = UnixTarget(args.unix or ListenConfig.unix, args.wait, _say)
    _say(f"{args.rate:g} lines/s, {args.workflows} concurrent workflows, scenario {args.scenario} -> {target.name} (seed {seed})")
    if args.history:
        sent = 0
        for chunk in _chunks(history(sim, args.history, time.time()), MAX_CHUNK):
            target.send(chunk)
            sent += len(chunk)
        _say(f"sent {sent} lines of history ({format_duration(args.history)} of simulated time)")
    lines = stream(sim, random.Random(seed + 1), args.invalid)
    # Ctrl-C (or `docker stop`) is how an endless demo ends: finish the current write, close
    # cleanly, and report exactly what was sent.
    def stop(*_: object) -> None:
        progress.stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        pace(target, lines, args.rate, args.duration, progress)
        target.close()
    except ClientError:
        target.abandon()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runs = ", ".join(f"{n} {outcome}" for outcome, n in sim.outcomes.items())
        _say(
            f"sent {progress.sent} lines ({progress.invalid} invalid) in {time.monotonic() - started:.1f}s; "
            f"runs: {sim.started} started, {runs}"
        )
    return 0
