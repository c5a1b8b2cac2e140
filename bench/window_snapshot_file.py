"""Windows that survive a restart: what the snapshot file costs, in-process.

    PYTHONPATH=.:bench python bench/window_snapshot_file.py          # N=2000000 REPEAT=5 DIR=$TMPDIR

Fills a WindowSink with N events over the last hour (as bench/window_query.py does), then times:
  periodic save  WindowAutosave.save as the sidecar runs it, on an asyncio loop: the store copied in
                 slices, one per loop turn (persist.SlicedCopy), then written from a worker thread.
                 Per save: the longest loop turn it took (its sidecar_window_snapshot_last_pause_seconds),
                 the p50 turn, the turns, and the whole save until the rename. Beside it a heartbeat
                 task sleeps 1 ms at a time: how late it wakes is how long the loop could not run,
                 whatever held it (a slice, the last turn, or the GIL held by the writer thread).
  capture        the copy at once (what the shutdown save does, after the drain)
  write          np.savez of that copy to a temp file, fsync, rename (a worker thread in the sidecar)
  load           np.load (allow_pickle=False) and restore into a new store, as at start
and prints the file's size per stored event. For scale it also times the pause of one
/v1/stats?window=1h&by=agent (its snapshot and row copy on the loop), the heaviest query.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

from prometheus_client import CollectorRegistry
from window_query import fill

from sidecar.config import WindowsConfig
from sidecar.sinks.window import WindowSink
from sidecar.sinks.window.autosave import WindowAutosave
from sidecar.sinks.window.persist import SlicedCopy, capture, read_file, restore, write_file
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
        f"{label:<26} wall p50 {statistics.median(walls):8.1f} ms  max {max(walls):8.1f} ms   "
        f"cpu p50 {statistics.median(cpus):8.1f} ms   ({REPEAT} runs)"
    )


def turns(sink: WindowSink, now: float) -> list[float]:
    """Every loop turn of one sliced copy, in ms (the last is `finish`)."""
    out = []
    t0 = time.perf_counter()
    copy = SlicedCopy(sink.store)
    while copy.step():
        out.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
    copy.finish(now, final=False)
    out.append((time.perf_counter() - t0) * 1000)
    return out


async def periodic_saves(sink: WindowSink, config: WindowsConfig, clock: FakeClock) -> None:
    registry = CollectorRegistry()
    autosave = WindowAutosave(sink, config, registry, clock)
    pauses, saves, late = [], [], []
    for _ in range(REPEAT):
        stop = asyncio.Event()
        worst = [0.0]

        async def heartbeat() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.001)
                worst[0] = max(worst[0], time.perf_counter() - t0 - 0.001)

        beat = asyncio.ensure_future(heartbeat())
        await asyncio.sleep(0.01)
        await autosave.save(final=False)
        stop.set()
        await beat
        pauses.append(1000 * (registry.get_sample_value("sidecar_window_snapshot_last_pause_seconds") or 0))
        saves.append(1000 * (registry.get_sample_value("sidecar_window_snapshot_last_duration_seconds") or 0))
        late.append(1000 * worst[0])
    print(
        f"{'periodic save: loop turn':<26} longest p50 {statistics.median(pauses):6.1f} ms  max {max(pauses):6.1f} ms   "
        f"heartbeat late p50 {statistics.median(late):6.1f} ms  max {max(late):6.1f} ms   "
        f"save until renamed p50 {statistics.median(saves):7.1f} ms  max {max(saves):7.1f} ms   ({REPEAT} saves)"
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
    every = [turns(sink, clock()) for _ in range(REPEAT)]
    flat = [t for save in every for t in save]
    print(
        f"{'sliced copy: loop turns':<26} p50 {statistics.median(flat):6.2f} ms  max {max(flat):6.2f} ms  "
        f"last turn (finish) p50 {statistics.median(s[-1] for s in every):6.2f} ms   {len(every[0])} turns per save"
    )
    timed("capture at once", lambda: capture(sink.store, clock(), final=True))
    arrays = capture(sink.store, clock(), final=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("DIR")) as tmp:
        path = os.path.join(tmp, "windows.npz")
        timed("write (worker)", lambda: write_file(path, arrays))
        asyncio.run(periodic_saves(sink, replace(config, snapshot_path=path), clock))
        size = os.path.getsize(path)
        print(f"file {size / 1e6:.1f} MB, {size / stored:.1f} bytes per stored event")

        def load() -> None:
            fresh = WindowSink(config, None, clock)
            restore(fresh.store, read_file(path), clock())

        timed("load (read + restore)", load)


if __name__ == "__main__":
    main()
