"""CPU time the window sink adds per event, in-process, beside the metrics sink's.

    PYTHONPATH=. python bench/window_consume.py     # N=300000 BATCH=800 [INDEX=agent]

Decodes N copies of the ceiling probe's event (timestamps now, spread over 1 s) with the
sidecar's own EventDecoder into batches of BATCH (about what one 256 KiB socket read
holds), then feeds the same batches to a MetricsSink and to a WindowSink and reports
each one's thread CPU time per event; the window figure includes every flush (filing
into the store, windows, counters and sorted buffers, and folds).
"""

from __future__ import annotations

import json
import os
import time

from sidecar.config import Config
from sidecar.protocol import EventDecoder
from sidecar.sinks.metrics import MetricsSink
from sidecar.sinks.window import WindowSink
from sidecar.testing import FakeClock
from sidecar.types import Batch

N = int(os.environ.get("N", "300000"))
BATCH = int(os.environ.get("BATCH", "800"))
EV = {"type": "agent.completed", "timestamp": 0.0, "agent": "planner", "workflow": "code_review",
      "run_id": "wf-123456", "trace_id": "0af7651916cd43dd8448eb211c80319c", "severity": "info",
      "duration_ms": 1234.5, "input_tokens": 512, "output_tokens": 128, "cost_usd": 0.0123, "model": "gpt-4o"}


def main() -> None:
    clock = FakeClock(time.time())
    decoder = EventDecoder()
    batches = []
    for start in range(0, N, BATCH):
        lines = [json.dumps(EV | {"timestamp": clock.now - (i % 1000) / 1000, "duration_ms": float(i % 5000)}).encode() for i in range(start, start + BATCH)]
        events, raws, _ = decoder.decode(lines, clock.now)
        batches.append(Batch(events, raws, clock.now, "bench"))
    config = Config()
    index_by = tuple(filter(None, os.environ.get("INDEX", "").split(",")))  # INDEX=agent: windows.index_by
    window = WindowSink(config.replace(**{"windows.index_by": list(index_by)}).windows, None, clock)
    for name, sink in (("metrics", MetricsSink(config.metrics, config.lifecycle, None)), ("window", window)):
        c0 = time.thread_time()
        for i, batch in enumerate(batches):
            sink.consume(batch)
            if i % 100 == 99:  # about the maintain tick at ~100k events/s
                clock.advance(1.0)
                sink.maintain(clock.now)
        sink.maintain(clock.now)
        print(f"{name:<8} sink: {(time.thread_time() - c0) / N * 1e6:.2f} us CPU per event")


if __name__ == "__main__":
    main()
