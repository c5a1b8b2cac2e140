"""Bytes per sample with 1,000,000 samples in the 1h window: RSS delta and tracemalloc.

    PYTHONPATH=. python bench/window_memory.py        # N=1000000 [INDEX=agent] [HUGEPAGES=0]

Every event carries a duration, tokens, cost, an agent and a run id (the worst case:
every column is used). Events are spread over the last hour, so the 1h window holds
all N, 15m a quarter, 5m a twelfth and 1m a sixtieth. Prints RSS growth (from
/proc/self/statm, after the Event objects are gone and malloc_trim) and the numpy/Python bytes
tracemalloc attributes to the sink, each divided by N.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from window_query import fill  # noqa: E402

from sidecar.config import WindowsConfig  # noqa: E402
from sidecar.sinks.window import WindowSink  # noqa: E402
from sidecar.testing import FakeClock  # noqa: E402

N = int(os.environ.get("N", "1000000"))
INDEX_BY = tuple(filter(None, os.environ.get("INDEX", "").split(",")))  # INDEX=agent: windows.index_by
if os.environ.get("HUGEPAGES") == "0":  # diagnostic: numpy asks for transparent huge pages on big arrays
    import numpy as np

    np._core.multiarray._set_madvise_hugepage(False)


def rss() -> int:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS shows what is held
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    clock = FakeClock(time.time())
    # Warm up numpy and the event factory so their one-time allocations are not counted.
    warm = WindowSink(WindowsConfig(), None, FakeClock(clock.now))
    fill(warm, FakeClock(clock.now), 20_000, seed=9)
    del warm
    gc.collect()
    before = rss()
    sink = WindowSink(WindowsConfig(index_by=INDEX_BY), None, clock)
    fill(sink, clock, N)
    store = getattr(sink, "store", sink)  # the store holds the state since the window package split
    for w in store.windows:
        w.values.fold()
        for entries in w.index.values():
            for entry in entries.values():
                entry.values.fold()
    gc.collect()
    after = rss()
    per_window = {w.name: len(w.values) for w in store.windows}
    print(f"samples per window: {per_window}")
    print(f"RSS delta {(after - before) / 2**20:.1f} MiB = {(after - before) / N:.1f} bytes/sample")
    tracemalloc.start()
    sink2 = WindowSink(WindowsConfig(index_by=INDEX_BY), None, FakeClock(clock.now))
    fill(sink2, FakeClock(clock.now), N, seed=3)
    store2 = getattr(sink2, "store", sink2)
    for w in store2.windows:
        w.values.fold()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    rows = sum(a.nbytes for a in store2.cols.values()) * (store2.tail - store2.head) / len(store2.cols["ts"])
    sorted_bytes = sum(w.values.s.nbytes for w in store2.windows)
    print(f"tracemalloc: {current / N:.1f} bytes/sample held (peak while filling {peak / N:.1f});"
          f" live store rows {rows / N:.1f} B, sorted durations {sorted_bytes / N:.1f} B per sample")


if __name__ == "__main__":
    main()
