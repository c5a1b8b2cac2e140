"""CPU time the window sink adds per event in a steady state with eviction, in-process,
beside the metrics sink's.

    PYTHONPATH=. python bench/window_consume.py     # N=300000 BATCH=800 RATE=200 [INDEX=agent]

Varied events (bench/window_events.py) are decoded with the sidecar's own EventDecoder into
batches of BATCH (about what one 256 KiB socket read holds). The event clock runs at RATE
events per second: first a full hour of events fills every window (not timed), then N more
events are timed while the clock moves N/RATE seconds, so the oldest events leave every
window, the largest included, as they do in production. `maintain` runs every 25 batches
(20,000 events). Each sink's thread CPU time is summed over its consume and maintain calls
only, so the figure includes every flush, fold and eviction and excludes the decoding.
"""

from __future__ import annotations

import json
import os
import random
import time

from window_events import varied_event

from sidecar.config import Config
from sidecar.protocol import EventDecoder
from sidecar.sinks.metrics import MetricsSink
from sidecar.sinks.window import WindowSink
from sidecar.testing import FakeClock
from sidecar.types import Batch

N = int(os.environ.get("N", "300000"))
BATCH = int(os.environ.get("BATCH", "800"))
RATE = float(os.environ.get("RATE", "200"))  # events per second of event time
MAINTAIN_EVERY = 25  # batches


def main() -> None:
    rng = random.Random(1)
    start = time.time()
    clock = FakeClock(start)
    decoder = EventDecoder()
    config = Config()
    index_by = tuple(filter(None, os.environ.get("INDEX", "").split(",")))  # INDEX=agent: windows.index_by
    sinks = {
        "metrics": MetricsSink(config.metrics, config.lifecycle, None),
        "window": WindowSink(config.replace(**{"windows.index_by": list(index_by)}).windows, None, clock),
    }
    cpu = dict.fromkeys(sinks, 0.0)
    warm = int(3600 * RATE)
    total = warm + N
    for b, first in enumerate(range(0, total, BATCH)):
        clock.advance(BATCH / RATE)
        # Timestamps up to 2 s behind the clock: batches overlap a little, as senders' clocks do.
        lines = [json.dumps(varied_event(rng, i, clock.now - rng.random() * 2)).encode() for i in range(first, min(first + BATCH, total))]
        events, raws, _ = decoder.decode(lines, clock.now)
        batch = Batch(events, raws, clock.now, "bench")
        timed = first >= warm
        for name, sink in sinks.items():
            c0 = time.thread_time()
            sink.consume(batch)
            if b % MAINTAIN_EVERY == MAINTAIN_EVERY - 1:
                sink.maintain(clock.now)
            if timed:
                cpu[name] += time.thread_time() - c0
    window = sinks["window"].stats("1h")
    print(f"event clock moved {clock.now - start:,.0f} s ({warm:,} warm-up events, then {N:,} timed); 1h window holds {window['events']:,}")
    for name, seconds in cpu.items():
        print(f"{name:<8} sink: {seconds / N * 1e6:.2f} us CPU per event")


if __name__ == "__main__":
    main()
