"""Latency of `Emitter.emit()` in the calling thread while a sidecar (another process) ingests.

Each emit() is timed alone with perf_counter_ns (the timer's own cost, measured the same
way, is reported beside it). Two loads:

- paced: bursts of 100 events with a 2 ms pause between them (about 30k events/s offered,
  what a busy agent process might do), so the flusher and the sidecar keep up;
- flat out: emits back to back, the flusher thread competing for the GIL the whole time.

    python bench/client_emit_latency.py        # SECONDS=4 per load by default
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sidecar.client import Emitter  # noqa: E402
from sidecar.testing import SidecarProcess  # noqa: E402

SECONDS = float(os.environ.get("SECONDS", "4"))
FIELDS = dict(
    agent="planner", workflow="code_review", run_id="wf-123456", trace_id="0af7651916cd43dd8448eb211c80319c",
    duration_ms=1234.5, input_tokens=512, output_tokens=128, cost_usd=0.0123, model="gpt-4o",
)


def percentiles(samples: list[int]) -> dict[str, float]:
    samples = sorted(samples)
    at = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1000  # noqa: E731
    return {"n": len(samples), "median_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999), "max_us": samples[-1] / 1000}


def timer_cost() -> dict[str, float]:
    clock = time.perf_counter_ns
    out = []
    for _ in range(100_000):
        t0 = clock()
        out.append(clock() - t0)
    return percentiles(out)


def run(emitter: Emitter, paced: bool) -> dict[str, float]:
    clock = time.perf_counter_ns
    emit = emitter.emit
    samples: list[int] = []
    append = samples.append
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        for _ in range(100):
            t0 = clock()
            emit("agent.completed", **FIELDS)
            append(clock() - t0)
        if paced:
            time.sleep(0.002)
    return percentiles(samples)


def main() -> None:
    print(f"timer alone: {timer_cost()}")
    with tempfile.TemporaryDirectory() as tmp:
        proc = SidecarProcess(["--http", "127.0.0.1:0", "--unix", os.path.join(tmp, "s.sock")], env={"PYTHONPATH": ROOT})
        try:
            for paced in (True, False):
                emitter = Emitter(unix=proc.unix)
                for _ in range(2000):  # warm up: thread started, connection made
                    emitter.emit("agent.completed", **FIELDS)
                emitter.flush(30)
                result = run(emitter, paced)
                emitter.flush(60)
                stats = emitter.stats()
                emitter.close()
                label = "paced (bursts of 100, 2 ms apart)" if paced else "flat out"
                rate = result["n"] / SECONDS
                print(f"{label}: {rate:,.0f} emits/s offered; {result}; sent={stats['sent']} dropped={stats['dropped']} unconfirmed={stats['unconfirmed']}")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
