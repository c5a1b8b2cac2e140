"""Where a scrape under load spends its CPU: each thread's CPU time while a sidecar at the cap ingests.

    python bench/scrape_thread_cpu.py none plain none plain     # modes, run in this order
    python bench/scrape_thread_cpu.py --seconds 30 --every 5 none plain

Each mode starts a fresh sidecar, loads bench/scrape.py's 10,000 label sets, then ingests 600,000
realistic events (or for `--seconds`) over the Unix socket (bench/scrape.py's `ingest_rate`):
`none` unscraped, `plain` with its plain scraper (OpenMetrics, gzip) every 2 s (`--every`). Per run: events/s, the process's CPU per
event, the event-loop thread's CPU (the main thread: ingest and the pipeline) and each other
thread's (the worker threads that render and gzip each scrape), from /proc/PID/task/*/stat.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scrape  # noqa: E402

EVENTS = 600_000


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread id."""
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(task + "/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[os.path.basename(task)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modes", nargs="*", choices=["none", "plain"], default=["none", "plain"])
    ap.add_argument("--seconds", type=float, default=0.0, help="ingest for this long, not 600,000 events")
    ap.add_argument("--every", type=float, default=2.0, help="the plain scraper's interval, seconds")
    args = ap.parse_args()
    modes = args.modes
    lines = scrape.cap_lines(10_000)
    for mode in modes:
        with tempfile.TemporaryDirectory() as tmp:
            proc = scrape.start_loaded(tmp, lines)
            try:
                before = thread_cpu(proc.pid)
                if mode == "plain":
                    with scrape.plain_scraper(proc.url, every=args.every):
                        r = scrape.ingest_rate(proc.url, proc.unix, proc.pid, EVENTS, seconds=args.seconds)
                else:
                    r = scrape.ingest_rate(proc.url, proc.unix, proc.pid, EVENTS, seconds=args.seconds)
                after = thread_cpu(proc.pid)
            finally:
                proc.terminate()
                proc.wait(30)
        spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
        loop = spent.pop(str(proc.pid), 0.0)
        others = sorted((round(s, 2) for s in spent.values() if s > 0.01), reverse=True)
        print(f"{mode}: {r['events']:,.0f} events in {r['seconds']:.1f} s, {r['rate']:,.0f} events/s, {r['cpu_us']:.1f} µs/event, {r['scrapes']:.0f} scrapes; "
              f"event-loop thread {loop:.2f} s ({loop / r['events'] * 1e6:.2f} µs/event), other threads (s) {others}", flush=True)


if __name__ == "__main__":
    main()
