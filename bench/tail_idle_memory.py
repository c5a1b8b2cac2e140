"""Extra sidecar RSS for idle live-tail clients (target: <= 100 MB for 1000).

    python bench/tail_idle_memory.py [--clients 1000] [--procs 2]

A real `agent-sidecar run`; RSS is read from /proc before any client and again once
`--clients` real websockets clients (each filtered to one agent of 100, over `--procs`
processes) are connected and idle.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tail_common import machine, rss_mib, scrape_value, serve_clients, start_sidecar  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("fork")
    queries = [f"agent=agent-{i % 100:02d}" for i in range(args.clients)]
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp, config=f"tail:\n  max_clients: {args.clients + 10}\n")
        try:
            url = proc.url.replace("http://", "ws://") + "/v1/tail"
            time.sleep(1)
            before = rss_mib(proc.pid)
            ready, stop = ctx.Queue(), ctx.Event()
            procs = [
                ctx.Process(target=serve_clients, args=(url, queries[i :: args.procs], lambda _: None, ready, stop))
                for i in range(args.procs)
            ]
            for p in procs:
                p.start()
            connected = sum(ready.get(timeout=300) for _ in procs)
            time.sleep(2)  # let the handshakes' garbage be collected
            assert scrape_value(proc.url, "sidecar_tail_clients") == connected == args.clients
            after = rss_mib(proc.pid)
            stop.set()
            for p in procs:
                p.join(30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"command: python bench/tail_idle_memory.py {' '.join(sys.argv[1:])}")
    print(f"sidecar RSS: {before:.1f} MiB before clients, {after:.1f} MiB with {args.clients} idle clients: "
          f"+{after - before:.1f} MiB ({(after - before) * 1024 / args.clients:.0f} KiB per client)")


if __name__ == "__main__":
    main()
