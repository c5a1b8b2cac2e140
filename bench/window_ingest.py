"""Ingest rate over the Unix socket with the window sink on: this tree against a baseline, and
beside the ceiling probe's limit.

    PYTHONPATH=. python bench/window_ingest.py --baseline 9595e83     # N=300000 ROUNDS=3

--baseline is a git revision (checked out into a temporary worktree, removed at the end) or
the path of a checkout; without it only this tree and the probe run. Each round starts a real
`agent-sidecar run` per tree (metrics, window and tail sinks as shipped), streams N varied
events (bench/window_events.py; timestamps within the last minute, so every event lands in
every window) from a client as fast as the socket takes them, and reports events/s from the
first byte sent until /metrics counts all N in agent_events_total; then runs
`ceiling.py limit`. The trees and the probe run back to back in each round because the
machine is shared and its speed drifts; the summary is the median over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

from window_events import varied_event

from sidecar.testing import SidecarProcess

N = int(os.environ.get("N", "300000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CEILING = os.environ.get("CEILING", "/work/shared/bench/ceiling.py")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def processed(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("agent_events_total{"))


def payload(now: float) -> list[bytes]:
    """N varied events in chunks of 1,000 lines, stamped within the minute before `now`."""
    rng = random.Random(7)
    lines = [json.dumps(varied_event(rng, i, now - rng.random() * 50)).encode() + b"\n" for i in range(N)]
    return [b"".join(lines[i : i + 1000]) for i in range(0, N, 1000)]


def sidecar_rate(checkout: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc = SidecarProcess(["--http", "127.0.0.1:0", "--unix", os.path.join(tmp, "s.sock")], env={"PYTHONPATH": checkout})
        try:
            chunks = payload(time.time())
            t0 = time.perf_counter()
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(proc.unix)
                for chunk in chunks:
                    s.sendall(chunk)
            while processed(proc.url) < N:
                time.sleep(0.05)
            return N / (time.perf_counter() - t0)
        finally:
            proc.stop()


def ceiling_rate() -> float:
    out = subprocess.run([sys.executable, CEILING, "limit"], capture_output=True, text=True, env={**os.environ, "N": str(N)}).stdout
    return float(out.split("=")[1].split()[0].replace(",", ""))


@contextlib.contextmanager
def checkout(baseline: str | None) -> Iterator[str | None]:
    """The baseline as a directory: a path as given, or a git revision in a temporary worktree."""
    if baseline is None or os.path.isdir(baseline):
        yield baseline
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "baseline")
        subprocess.run(["git", "-C", HERE, "worktree", "add", "--detach", path, baseline], check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", HERE, "worktree", "remove", "--force", path], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision or checkout path to compare with (default: none)")
    args = parser.parse_args()
    ratios, costs = [], []
    with checkout(args.baseline) as base_dir:
        for i in range(ROUNDS):
            base = sidecar_rate(base_dir) if base_dir else None
            rate = sidecar_rate(HERE)
            limit = ceiling_rate()
            ratios.append(rate / limit)
            line = f"round {i + 1}: this tree {rate:,.0f} events/s; limit {limit:,.0f} events/s; ratio {rate / limit:.2f}"
            if base:
                costs.append(1e6 / rate - 1e6 / base)
                line += f"; baseline {base:,.0f} events/s (this tree {costs[-1]:+.2f} us/event)"
            print(line, flush=True)
    print(f"median ratio to the probe's limit: {statistics.median(ratios):.2f} (target >= 0.25)")
    if costs:
        print(f"median difference to the baseline, end to end: {statistics.median(costs):+.2f} us/event")


if __name__ == "__main__":
    main()
