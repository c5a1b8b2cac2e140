"""What `agent_insights` costs a scrape at the cardinality cap: `compute` (every rule over the
default window and baseline) in-process, with the insights store holding 10,000 subjects.

    PYTHONPATH=$PWD python3 bench/insights_at_cap.py [--sets 10000] [--events 600000] [--rounds 7]

The app's sinks (`build_sinks`, default config) take bench/scrape.py's cap label sets, then
`--events` realistic events; then each round files 20,000 more events (as a scrape every 5-10 s
finds new events in the buckets still filling) and times one `compute`, as the `InsightsGauge`
does at a scrape once `insights.cache` has passed. Runs on a scrape's thread in the sidecar, so it
holds the GIL (ingest waits) for about its whole time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, realistic_lines  # noqa: E402
from scrape import cap_lines  # noqa: E402

from prometheus_client import CollectorRegistry  # noqa: E402
from sidecar.api.insights import compute  # noqa: E402
from sidecar.app import build_sinks  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.protocol import EventDecoder  # noqa: E402
from sidecar.types import Batch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=600_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    config = Config()
    sinks = build_sinks(config, CollectorRegistry(), time.time)
    order = sinks.in_order()
    decoder = EventDecoder()

    def feed(lines: list[bytes]) -> None:
        for i in range(0, len(lines), 1000):
            now = time.time()
            events, raws, _ = decoder.decode(lines[i : i + 1000], now)
            batch = Batch(events, raws, now, "unix")
            for sink in order:
                sink.consume(batch)

    feed(cap_lines(args.sets))
    feed(realistic_lines(args.events))
    store, c = sinks.insights, config.insights
    more = realistic_lines(20_000 * args.rounds, seed=2)
    took = []
    findings = 0
    for r in range(args.rounds):
        feed(more[r * 20_000 : (r + 1) * 20_000])
        t0 = time.perf_counter()
        result, _, _ = compute(store, c.window, c.baseline)
        took.append(time.perf_counter() - t0)
        findings = len(result.findings)
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
    print(f"{args.sets:,} cap label sets + {args.events:,} realistic events, {findings} findings; "
          f"compute over {args.rounds} rounds: median {statistics.median(took) * 1000:.0f} ms, "
          f"min {min(took) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
