"""What reading a consistent view costs the writer's thread (the event loop), in-process.

    PYTHONPATH=. python bench/window_snapshot.py     # N=1000000 REPEAT=30

Since the window package split, only the event loop's thread changes the window store; a
query or a scrape reads a Snapshot taken there. This fills a WindowSink with N events over
the last hour (as bench/window_query.py) and times, on this thread, what each reader makes
the loop do before the rest of its work can move elsewhere:
  light query    the snapshot of /v1/stats?window=1h (counters copied, sorted arrays shared)
  agent= query   its snapshot plus the gather of the matching rows (handed to a worker thread)
  by=agent       its snapshot plus a copy of the window's key, duration and run columns
  scrape         the snapshot a scrape asks the loop for, with windows.prometheus_by: [agent]
Prints p50 and max in milliseconds of thread CPU time.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from window_query import fill

from sidecar.config import WindowsConfig
from sidecar.sinks.window import WindowSink
from sidecar.sinks.window.query import Query, detach
from sidecar.testing import FakeClock

N = int(os.environ.get("N", "1000000"))
REPEAT = int(os.environ.get("REPEAT", "30"))


def timed(label: str, fn: Callable[[], object]) -> None:
    fn()
    ms = []
    for _ in range(REPEAT):
        c0 = time.thread_time()
        fn()
        ms.append((time.thread_time() - c0) * 1000)
    print(f"{label:<14} p50 {statistics.median(ms):7.3f} ms   max {max(ms):7.3f} ms   ({REPEAT} runs)")


def main() -> None:
    clock = FakeClock(time.time())
    sink = WindowSink(WindowsConfig(prometheus_by=("agent",)), None, clock)
    fill(sink, clock, N)
    light, by_agent, coder = Query("1h"), Query("1h", by="agent"), Query("1h", {"agent": "coder"})
    timed("light query", lambda: sink.snapshot(light))
    timed("agent= query", lambda: detach(sink.snapshot(coder), coder))
    timed("by=agent", lambda: detach(sink.snapshot(by_agent), by_agent))
    timed("scrape", lambda: sink._scrape_snapshot_here(copy=True))


if __name__ == "__main__":
    main()
