"""Real time per event of each hot-path stage, in-process: framing, decode, and each sink's consume.

    python bench/pipeline_time.py [--events 100000] [--batch 1000] [--runs 1]
    SIDECAR_REPO=/path/to/other/checkout python bench/pipeline_time.py    # the same for another tree

bench/ingest.py's realistic events, framed and decoded batch by batch as the Unix listener does
(fresh objects per batch, as live), then handed to the app's sinks in the pipeline's order. Unlike
bench/sink_instructions.py this counts time, so memory stalls count too; on a VM whose speed drifts,
alternate two trees run by run and compare the fastest runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.environ.get("SIDECAR_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "bench")]

from common import realistic_lines  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from sidecar.app import build_sinks  # noqa: E402
from sidecar.commands.run import tune_collector  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.pricing import Pricer  # noqa: E402
from sidecar.protocol import EventDecoder, LineFramer  # noqa: E402
from sidecar.types import Batch  # noqa: E402


def run(chunks: list[bytes], n: int) -> dict[str, float]:
    config, registry = Config(), CollectorRegistry()
    sinks = build_sinks(config, registry, time.time)
    decoder = EventDecoder(config.ingest.max_clock_skew, Pricer(config.pricing, registry), sinks.metrics.label_sets)  # as build_app wires it
    framer = LineFramer(config.ingest.max_event_bytes)
    stages = [("metrics", sinks.metrics), ("window", sinks.window), ("insights", sinks.insights), ("tail", sinks.tail)]
    took = dict.fromkeys(["frame", "decode", *(name for name, _ in stages), "maintain"], 0.0)
    clock = time.perf_counter
    for chunk in chunks:
        t0 = clock()
        lines, _ = framer.feed_block(chunk)
        t1 = clock()
        took["frame"] += t1 - t0
        now = time.time()
        events, raws, _, numbered = decoder.decode_numbered(lines, now)  # as the Unix listener does
        t0 = clock()
        took["decode"] += t0 - t1
        batch = Batch(events, raws, now, "unix", numbered)
        for name, sink in stages:
            sink.consume(batch)
            t1 = clock()
            took[name] += t1 - t0
            t0 = t1
    t0 = clock()
    for _, sink in stages:
        sink.maintain(time.time())  # what the sinks still hold waiting
    took["maintain"] = clock() - t0
    return {k: v / n * 1e6 for k, v in took.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="events per read")
    ap.add_argument("--runs", type=int, default=1, help="runs, each on fresh sinks")
    args = ap.parse_args()
    tune_collector()  # as `agent-sidecar run` does
    lines = realistic_lines(args.events)
    chunks = [b"".join(lines[i : i + args.batch]) for i in range(0, args.events, args.batch)]
    print(f"{REPO}: {args.events:,} events in reads of {args.batch:,}, us per event")
    for _ in range(args.runs):
        per = run(chunks, args.events)
        print(" ".join(f"{k}={v:.2f}" for k, v in per.items()), f"total={sum(per.values()):.2f}", flush=True)


if __name__ == "__main__":
    main()
