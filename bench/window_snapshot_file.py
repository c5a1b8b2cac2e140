"""Windows that survive a restart: what the snapshot file costs, in-process.

    PYTHONPATH=. python bench/window_snapshot_file.py          # N=2000000 REPEAT=5 DIR=$TMPDIR

Fills a WindowSink with N events over the last hour (as bench/window_query.py does), then times:
  capture     the copy made on the event loop (the only pause ingest sees), thread CPU and wall
  write       np.savez of that copy to a temp file, fsync, rename (a worker thread in the sidecar)
  load        np.load (allow_pickle=False) and restore into a new store, as at start
and prints the file's size per stored event. For scale it also times the pause of one
/v1/stats?window=1h&by=agent (its snapshot and row copy on the loop), the heaviest query.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

from window_query import fill

from sidecar.config import WindowsConfig
from sidecar.sinks.window import WindowSink
from sidecar.sinks.window.persist import capture, fork_writer, read_file, reap_writer, restore, write_file
from sidecar.sinks.window.query import Query, detach
from sidecar.testing import FakeClock

N = int(os.environ.get("N", "2000000"))
REPEAT = int(os.environ.get("REPEAT", "5"))


def timed(label: str, fn: Callable[[], object]) -> None:
    walls, cpus = [], []
    for _ in range(REPEAT):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpus.append((time.thread_time() - c0) * 1000)
        walls.append((time.perf_counter() - t0) * 1000)
    print(
        f"{label:<22} wall p50 {statistics.median(walls):8.1f} ms  max {max(walls):8.1f} ms   "
        f"cpu p50 {statistics.median(cpus):8.1f} ms   ({REPEAT} runs)"
    )


def main() -> None:
    clock = FakeClock(time.time())
    config = WindowsConfig(prometheus_by=("agent",))
    sink = WindowSink(config, None, clock)
    fill(sink, clock, N)
    stored = sink.store.tail - sink.store.head
    by_agent = Query("1h", by="agent")
    rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(f"{stored} events stored (N={N}), windows {[w.name for w in sink.store.windows]}, RSS {rss / 2**20:.0f} MiB")
    timed("/v1/stats by=agent", lambda: detach(sink.snapshot(by_agent), by_agent))
    timed("capture (loop pause)", lambda: capture(sink.store, clock(), final=True))
    arrays = capture(sink.store, clock(), final=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("DIR")) as tmp:
        path = os.path.join(tmp, "windows.npz")
        timed("write (worker)", lambda: write_file(path, arrays))
        pauses, totals, cpu = [], [], []
        for _ in range(REPEAT):
            t0, c0 = time.perf_counter(), time.thread_time()
            child = fork_writer(sink.store, clock(), path)
            pauses.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.thread_time() - c0) * 1000)
            reap_writer(*child)
            totals.append((time.perf_counter() - t0) * 1000)
        print(
            f"{'fork (loop pause)':<22} wall p50 {statistics.median(pauses):8.1f} ms  max {max(pauses):8.1f} ms   "
            f"cpu p50 {statistics.median(cpu):8.1f} ms   child done p50 {statistics.median(totals):8.1f} ms   ({REPEAT} runs)"
        )
        size = os.path.getsize(path)
        print(f"file {size / 1e6:.1f} MB, {size / stored:.1f} bytes per stored event")

        def load() -> None:
            fresh = WindowSink(config, None, clock)
            restore(fresh.store, read_file(path), clock())

        timed("load (read + restore)", load)


if __name__ == "__main__":
    main()
