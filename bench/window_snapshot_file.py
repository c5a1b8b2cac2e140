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


def turns(sink: WindowSink, now: float) -> list[tuple[float, float]]:
    """(wall, this thread's CPU) of every loop turn of one sliced copy, in ms (the last is `finish`)."""
    out = []
    t0, c0 = time.perf_counter(), time.thread_time()
    copy = SlicedCopy(sink.store)
    more = True
    while more:
        more = copy.step()
        if not more:
            copy.finish(now, final=False)
        out.append(((time.perf_counter() - t0) * 1000, (time.thread_time() - c0) * 1000))
        t0, c0 = time.perf_counter(), time.thread_time()
    return out


async def heartbeat(stop: asyncio.Event) -> float:
    """The longest the loop could not run (ms): how late a 1 ms sleep wakes, at worst."""
    worst = 0.0
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - t0 - 0.001)
    return worst * 1000


async def periodic_saves(sink: WindowSink, config: WindowsConfig, clock: FakeClock) -> None:
    registry = CollectorRegistry()
    autosave = WindowAutosave(sink, config, registry, clock)
    pauses, saves, late, idle = [], [], [], []
    for _ in range(REPEAT):
        stop = asyncio.Event()
        beat = asyncio.ensure_future(heartbeat(stop))
        await asyncio.sleep(0.01)
        await autosave.save(final=False)
        stop.set()
        late.append(await beat)
        pauses.append(1000 * (registry.get_sample_value("sidecar_window_snapshot_last_pause_seconds") or 0))
        saves.append(1000 * (registry.get_sample_value("sidecar_window_snapshot_last_duration_seconds") or 0))
        # The same heartbeat for as long, without a save: what the machine's other load costs it.
        stop = asyncio.Event()
        beat = asyncio.ensure_future(heartbeat(stop))
        await asyncio.sleep(saves[-1] / 1000 + 0.01)
        stop.set()
        idle.append(await beat)
    print(
        f"{'periodic save (autosave)':<26} longest turn p50 {statistics.median(pauses):6.1f} ms  max {max(pauses):6.1f} ms   "
        f"save until renamed p50 {statistics.median(saves):7.1f} ms  max {max(saves):7.1f} ms   ({REPEAT} saves)"
    )
    print(
        f"{'  heartbeat late':<26} during a save p50 {statistics.median(late):6.1f} ms  max {max(late):6.1f} ms   "
        f"as long without one p50 {statistics.median(idle):6.1f} ms  max {max(idle):6.1f} ms"
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
    walls = [w for save in every for w, _ in save]
    cpus = [c for save in every for _, c in save]
    longest = [max(w for w, _ in save) for save in every]
    print(
        f"{'sliced copy: loop turns':<26} wall p50 {statistics.median(walls):5.2f} ms  max {max(walls):5.2f} ms   "
        f"cpu p50 {statistics.median(cpus):5.2f} ms  max {max(cpus):5.2f} ms   longest per save p50 {statistics.median(longest):5.2f} ms   "
        f"last turn (finish) wall p50 {statistics.median(s[-1][0] for s in every):5.2f} ms   {len(every[0])} turns per save"
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
