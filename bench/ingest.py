"""Ingest throughput of a real sidecar process, Unix socket and HTTP, beside the ceiling probe.

    python bench/ingest.py [--events 300000] [--transport unix|http|both]

A load generator in its own process streams a realistic label mix (20 agents x 5
workflows x 3 models x 8 types) as fast as it can; the clock stops when the
sidecar reports every event processed by all sinks (sidecar_events_processed_total).

`ceiling.py limit` is measured right before and right after each run, and the ratio is taken
to their mean: this VM's speed drifts by up to 2x within minutes, and one probe reading for
two runs a minute apart compared the second run with a machine that was no longer there.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ceiling_limit, machine, realistic_lines, rss_mib, scrape_value, send_ndjson, start_sidecar, timed_load  # noqa: E402


def unix_client(path: str, n: int, loaded, ready) -> None:
    lines = realistic_lines(n)
    chunks = [b"".join(lines[i : i + 1000]) for i in range(0, n, 1000)]
    loaded.set()
    ready.wait()
    send_ndjson(path, chunks)


def http_client(url: str, n: int, loaded, ready, threads: int = 4) -> None:
    lines = realistic_lines(n)
    bodies = [b"".join(lines[i : i + 1000]) for i in range(0, n, 1000)]
    from sidecar.client.senders import HttpSender

    loaded.set()
    ready.wait()

    def worker(part):
        conn = HttpSender(url)
        for body in part:
            while conn.post(body).status == 503:  # retry at once, not after Retry-After: this finds the ceiling
                time.sleep(0.01)

    ts = [threading.Thread(target=worker, args=(bodies[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run(transport: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp)
        try:
            client, address = (unix_client, proc.unix) if transport == "unix" else (http_client, proc.url)
            elapsed, cpu = timed_load(proc.pid, proc.url, "sidecar_events_processed_total", n, client, address, n)
            rss = rss_mib(proc.pid)
            series = scrape_value(proc.url, "sidecar_series")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return {"transport": transport, "events": n, "seconds": elapsed, "rate": n / elapsed, "cpu_us": cpu / n * 1e6, "rss_mib": rss, "series": series}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--transport", choices=["unix", "http", "both"], default="both")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| transport | events | events/s | probe before / after | x probe (mean) | CPU/event | RSS | series |")
    print("|---|---|---|---|---|---|---|---|")
    for transport in (["unix", "http"] if args.transport == "both" else [args.transport]):
        before = ceiling_limit()
        r = run(transport, args.events)
        after = ceiling_limit()
        limit = (before + after) / 2
        print(
            f"| {transport} | {r['events']:,} | {r['rate']:,.0f} | {before:,.0f} / {after:,.0f} | {r['rate'] / limit:.2f} | "
            f"{r['cpu_us']:.1f} µs | {r['rss_mib']:.0f} MiB | {r['series']:.0f} |"
        )


if __name__ == "__main__":
    main()
