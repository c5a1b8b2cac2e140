"""Ingest rate over the Unix socket with the window sink on, beside the ceiling probe's limit.

    PYTHONPATH=. python bench/window_ingest.py        # N=300000, same event as ../shared/bench/ceiling.py

Starts a real `agent-sidecar run` (metrics and window sinks), streams N copies of the
ceiling probe's event (its timestamp set to now, so every event lands in every window
instead of being skipped as late) from a client process as fast as the socket takes
them, and reports events/s from the first byte sent until /v1/stats counts all N.
Then runs `ceiling.py limit` in the same run and prints the ratio.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from sidecar.testing import SidecarProcess

N = int(os.environ.get("N", "300000"))
CEILING = os.environ.get("CEILING", "/work/shared/bench/ceiling.py")
EV = {"type": "agent.completed", "timestamp": 0.0, "agent": "planner", "workflow": "code_review",
      "run_id": "wf-123456", "trace_id": "0af7651916cd43dd8448eb211c80319c", "severity": "info",
      "duration_ms": 1234.5, "input_tokens": 512, "output_tokens": 128, "cost_usd": 0.0123, "model": "gpt-4o"}


def events_in(url: str) -> int:
    with urllib.request.urlopen(f"{url}/v1/stats?window=1h", timeout=30) as r:
        return json.load(r)["events"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
        proc = SidecarProcess(["--http", "127.0.0.1:0", "--unix", os.path.join(tmp, "s.sock")], env=env)
        try:
            line = json.dumps(EV | {"timestamp": time.time()}).encode() + b"\n"
            chunk = line * 1000
            t0 = time.perf_counter()
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(proc.unix)
                for _ in range(N // 1000):
                    s.sendall(chunk)
            while events_in(proc.url) < N:
                time.sleep(0.05)
            dt = time.perf_counter() - t0
        finally:
            proc.stop()
    rate = N / dt
    print(f"sidecar (metrics + window sinks): {N} events in {dt:.2f}s = {rate:,.0f} events/s")
    out = subprocess.run([sys.executable, CEILING, "limit"], capture_output=True, text=True, env={**os.environ, "N": str(N)}).stdout
    print(out.strip())
    limit = float(out.split("=")[1].split()[0].replace(",", ""))
    print(f"ratio to the probe's limit: {rate / limit:.2f} (target >= 0.25)")


if __name__ == "__main__":
    main()
