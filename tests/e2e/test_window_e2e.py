"""The real `agent-sidecar run` process: events in over the socket, exact stats out over HTTP and the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from sidecar.testing import event, ndjson

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": REPO}


def wait_for_events(url: str, n: int) -> dict:
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"{url}/v1/stats?window=1h") as r:
            doc = json.load(r)
        if doc["events"] >= n or time.monotonic() > deadline:
            return doc
        time.sleep(0.02)


def test_socket_events_show_up_in_stats_and_the_cli_prints_them(spawn):
    proc = spawn()
    now = time.time()
    events = [event("llm.call", timestamp=now - i % 30, agent=f"agent{i % 3}", duration_ms=float(i), run_id=f"r{i % 7}") for i in range(1, 1001)]
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(proc.unix)
        s.sendall(ndjson(*events))
    doc = wait_for_events(proc.url, 1000)
    assert doc["events"] == 1000 and doc["exact"] is True
    assert doc["duration_ms"] | {} == {
        "count": 1000, "sum": 500500.0, "avg": 500.5, "min": 1.0, "max": 1000.0, "p50": 500.0, "p90": 900.0, "p95": 950.0, "p99": 990.0,
    }
    assert doc["agents_active"] == 3 and doc["workflows_active"] == 7
    cli = subprocess.run(
        [sys.executable, "-m", "sidecar", "stats", "--url", proc.url, "--window", "1h", "--by", "agent"],
        capture_output=True, text=True, env=ENV, timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    rows = [line.split() for line in cli.stdout.splitlines()]
    assert ["1h", "(all)", "1000"] == rows[3][:3]
    assert {r[0] for r in rows[4:]} == {"agent0", "agent1", "agent2"}
    watch = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "stats", "--url", proc.url, "--watch", "0.2"], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        screens = 0
        for line in watch.stdout:
            screens += "\x1b[H\x1b[2J" in line
            if screens == 2:
                break
        assert screens == 2  # it redraws, top-like
    finally:
        watch.terminate()
        watch.wait(10)
        watch.stdout.close()
