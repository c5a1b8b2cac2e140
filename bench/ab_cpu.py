"""A/B of sidecar CPU per event over the Unix socket: variants run in turn, round after round.

    python bench/ab_cpu.py --variant default . --variant small-reads . reads64k.yaml [--rounds 3] [--events 200000]

A variant is a name, a checkout (its `sidecar/` is the one run) and optionally a config file.
Each round runs every variant once: a fresh sidecar takes bench/ingest.py's realistic events as
1,000-line writes from this process, and the sidecar's own CPU time (user + system, /proc) is
divided by the events it processed. On a VM whose speed drifts by 1.5x within minutes, taking the
variants in turn and comparing medians is what keeps a drift from reading as a difference; a
difference smaller than the spread of one variant's runs is not one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import cpu_seconds, realistic_lines, scrape_value  # noqa: E402


def run_once(repo: str, config: str | None, chunks: list[bytes], n: int) -> tuple[float, float]:
    """(sidecar CPU µs per event, events per second) of one run."""
    common.REPO = os.path.abspath(repo)  # start_sidecar and send_ndjson import from it
    with tempfile.TemporaryDirectory() as tmp:
        proc = common.start_sidecar(tmp, config=Path(config).read_text() if config else None)
        try:
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            common.send_ndjson(proc.unix, chunks)
            while scrape_value(proc.url, "sidecar_events_processed_total") < n:
                time.sleep(0.02)
            wall, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(30)
    return cpu / n * 1e6, n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME REPO [CONFIG]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    if any(not 2 <= len(v) <= 3 for v in args.variant):
        ap.error("--variant takes NAME REPO [CONFIG]")
    lines = realistic_lines(args.events)
    chunks = [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
    runs: dict[str, list[float]] = {v[0]: [] for v in args.variant}
    print(f"{common.machine()}, {args.events:,} events per run")
    for r in range(args.rounds):
        for name, repo, *config in args.variant:
            cpu_us, rate = run_once(repo, config[0] if config else None, chunks, args.events)
            runs[name].append(cpu_us)
            print(f"round {r + 1} {name}: {cpu_us:.2f} µs of sidecar CPU per event, {rate:,.0f} events/s", flush=True)
    for name, values in runs.items():
        print(f"{name}: median {statistics.median(values):.2f} µs/event, runs {', '.join(f'{v:.2f}' for v in sorted(values))}")


if __name__ == "__main__":
    main()
