"""Ingest rate over the Unix socket with the window sink on, beside the ceiling probe's limit.

    PYTHONPATH=. python bench/window_ingest.py     # N=300000 ROUNDS=3 BASELINE=/work/main

Starts a real `agent-sidecar run` (metrics and window sinks), streams N copies of the
ceiling probe's event (its timestamp set to now, so every event lands in every window
instead of being skipped as late) from a client as fast as the socket takes them, and
reports events/s from the first byte sent until /metrics counts all N in agent_events_total.
Each round also runs the core without this sink (the BASELINE checkout, if it exists) and
`ceiling.py limit`, back to back, because the machine is shared and its speed drifts;
the summary is the median over rounds.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from sidecar.testing import SidecarProcess

N = int(os.environ.get("N", "300000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CEILING = os.environ.get("CEILING", "/work/shared/bench/ceiling.py")
BASELINE = os.environ.get("BASELINE", "/work/main")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EV = {"type": "agent.completed", "timestamp": 0.0, "agent": "planner", "workflow": "code_review",
      "run_id": "wf-123456", "trace_id": "0af7651916cd43dd8448eb211c80319c", "severity": "info",
      "duration_ms": 1234.5, "input_tokens": 512, "output_tokens": 128, "cost_usd": 0.0123, "model": "gpt-4o"}


def processed(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("agent_events_total{"))


def sidecar_rate(checkout: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc = SidecarProcess(["--http", "127.0.0.1:0", "--unix", os.path.join(tmp, "s.sock")], env={"PYTHONPATH": checkout})
        try:
            chunk = (json.dumps(EV | {"timestamp": time.time()}).encode() + b"\n") * 1000
            t0 = time.perf_counter()
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(proc.unix)
                for _ in range(N // 1000):
                    s.sendall(chunk)
            while processed(proc.url) < N:
                time.sleep(0.05)
            return N / (time.perf_counter() - t0)
        finally:
            proc.stop()


def ceiling_rate() -> float:
    out = subprocess.run([sys.executable, CEILING, "limit"], capture_output=True, text=True, env={**os.environ, "N": str(N)}).stdout
    return float(out.split("=")[1].split()[0].replace(",", ""))


def main() -> None:
    ratios, costs = [], []
    for i in range(ROUNDS):
        base = sidecar_rate(BASELINE) if os.path.isdir(BASELINE) else None
        rate = sidecar_rate(HERE)
        limit = ceiling_rate()
        ratios.append(rate / limit)
        line = f"round {i + 1}: with windows {rate:,.0f} events/s; limit {limit:,.0f} events/s; ratio {rate / limit:.2f}"
        if base:
            costs.append(1e6 / rate - 1e6 / base)
            line += f"; core alone {base:,.0f} events/s (window sink adds {costs[-1]:.2f} us/event)"
        print(line, flush=True)
    print(f"median ratio to the probe's limit: {statistics.median(ratios):.2f} (target >= 0.25)")
    if costs:
        print(f"median cost the window sink adds end to end: {statistics.median(costs):.2f} us/event")


if __name__ == "__main__":
    main()
