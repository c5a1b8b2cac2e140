"""CPU per event of decoding and of each sink's `consume`, by batch size, in-process.

    python bench/sink_batch_sizes.py [--sizes 1,10,100,1000]
    SIDECAR_REPO=/path/to/other/checkout python bench/sink_batch_sizes.py

A listener hands the pipeline whatever one read (or one POST) held: a thousand events from a busy
sender, one from a quiet one. Each stage has a cost per batch (numpy calls, lookups) and one per
event; this prints both regimes. bench/ingest.py's realistic events (20 agents x 5 workflows x 3
models x 8 types), every sink first warmed with 20,000 events so that its series, slots and
subjects exist; then 6,000 more events in batches of each size, timed with `thread_time` per
stage, with the collector set as `agent-sidecar run` sets it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

REPO = os.environ.get("SIDECAR_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "bench")]

from common import machine, realistic_lines  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from sidecar.app import build_sinks  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.protocol import EventDecoder  # noqa: E402
from sidecar.types import Batch  # noqa: E402

WARM, TIMED = 20_000, 6_000
STAGES = ("metrics", "window", "insights", "tail")


def run(size: int, lines: list[bytes]) -> dict[str, float]:
    now = time.time()
    decoder = EventDecoder()
    built = build_sinks(Config(), CollectorRegistry(), lambda: now)
    sinks = [(name, getattr(built, name)) for name in STAGES]
    for i in range(0, WARM, 1000):
        events, raws, _ = decoder.decode(lines[i : i + 1000], now)
        for _, sink in sinks:
            sink.consume(Batch(events, raws, now, "bench"))
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000)
    spent = dict.fromkeys(("decode", *STAGES), 0.0)
    for i in range(WARM, WARM + TIMED, size):
        t = time.thread_time()
        events, raws, _ = decoder.decode(lines[i : i + size], now)
        spent["decode"] += time.thread_time() - t
        batch = Batch(events, raws, now, "bench")
        for name, sink in sinks:
            t = time.thread_time()
            sink.consume(batch)
            spent[name] += time.thread_time() - t
    gc.unfreeze()
    return {name: seconds / TIMED * 1e6 for name, seconds in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,10,100,1000")
    args = ap.parse_args()
    lines = realistic_lines(WARM + TIMED)
    print(f"machine: {machine()}; code: {REPO}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| batch | decode | metrics | window | insights | tail | total (µs CPU per event) |")
    print("|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = run(size, lines)
        cells = " | ".join(f"{r[name]:.1f}" for name in ("decode", *STAGES))
        print(f"| {size:,} | {cells} | {sum(r.values()):.1f} |")


if __name__ == "__main__":
    main()
