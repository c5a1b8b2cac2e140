"""/v1/stats?window=1h latency with 1,000,000 samples in the 1h window, in-process.

    python bench/window_query.py            # N=1000000 QUERIES=300

Fills a WindowSink with N events spread over the last hour (4 agents, 50 runs,
every event with duration, tokens and cost), then times `sink.stats("1h")`:
  quiet      no ingest between queries (pending buffers empty)
  ingesting  100 new events and a 10 ms clock step before each query, so every
             query first files them and evicts what left each window
  agent=     the same with a filter (the row-scan path)
Prints p50/p99/max in milliseconds.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from sidecar.config import WindowsConfig
from sidecar.sinks.window import WindowSink
from sidecar.testing import FakeClock
from sidecar.types import Batch, Event

N = int(os.environ.get("N", "1000000"))
QUERIES = int(os.environ.get("QUERIES", "300"))
AGENTS = ["planner", "coder", "reviewer", "tester"]


def events(rng: np.random.Generator, now: float, n: int, spread: float) -> list[Event]:
    ts = now - rng.random(n) * spread
    dur = np.round(rng.lognormal(6, 1, n), 1)
    return [
        Event(type="agent.completed", timestamp=float(t), severity="info", success=True, agent=AGENTS[i % 4], workflow="code_review",
              model="gpt-4o", run_id=f"wf-{i % 50}", duration_ms=float(d), input_tokens=512, output_tokens=128, cost_usd=0.0123)
        for i, (t, d) in enumerate(zip(ts.tolist(), dur.tolist()))
    ]


def fill(sink: WindowSink, clock: FakeClock, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for start in range(0, n, 50_000):
        evs = events(rng, clock.now, min(50_000, n - start), 3590.0)
        sink.consume(Batch(evs, [b""] * len(evs), clock.now, "bench"))
    sink.flush()


def timed(fn, queries: int, between=None) -> tuple[list[float], list[float]]:
    """Wall-clock and this thread's CPU time per query, in ms (the machine is shared:
    CPU time shows the work, wall time what a caller waited)."""
    wall, cpu = [], []
    for _ in range(queries):
        if between:
            between()
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    return wall, cpu


def report(label: str, times: tuple[list[float], list[float]]) -> None:
    for kind, ms in zip(("wall", "cpu"), times):
        q = statistics.quantiles(ms, n=100, method="inclusive")
        print(f"{label:<28} {kind:<4} p50 {q[49]:7.3f} ms   p99 {q[98]:7.3f} ms   max {max(ms):7.3f} ms   ({len(ms)} queries)")


def main() -> None:
    clock = FakeClock(time.time())
    # INDEX=agent: windows.index_by [agent], so agent= reads a per-agent sorted multiset.
    index_by = tuple(filter(None, os.environ.get("INDEX", "").split(",")))
    sink = WindowSink(WindowsConfig(index_by=index_by), None, clock)
    t0 = time.perf_counter()
    fill(sink, clock, N)
    print(f"filled {N:,} events in {time.perf_counter() - t0:.1f}s; 1h window holds {sink.stats('1h')['events']:,}")
    rng = np.random.default_rng(2)

    def ingest() -> None:
        clock.advance(0.01)
        evs = events(rng, clock.now, 100, 1.0)
        sink.consume(Batch(evs, [b""] * 100, clock.now, "bench"))

    sink.stats("1h")
    report("window=1h quiet", timed(lambda: sink.stats("1h"), QUERIES))
    report("window=1h ingesting", timed(lambda: sink.stats("1h"), QUERIES, ingest))
    report("window=1h&agent= quiet", timed(lambda: sink.stats("1h", {"agent": "coder"}), QUERIES // 3))
    report("window=1h&agent= ingesting", timed(lambda: sink.stats("1h", {"agent": "coder"}), QUERIES // 3, ingest))
    report("all windows + cumulative", timed(lambda: sink.stats(), QUERIES // 10))
    report("window=1h&by=agent", timed(lambda: sink.stats("1h", by="agent"), 10))


if __name__ == "__main__":
    main()
