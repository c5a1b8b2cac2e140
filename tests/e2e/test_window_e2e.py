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


def test_no_single_stats_request_delays_healthz_by_more_than_100_ms_with_20k_keys(spawn):
    """Heavy /v1/stats queries (groups over 20k agents and 5k types, every section) are
    computed off the event loop from a snapshot: /healthz keeps answering at once."""
    import http.client
    import threading
    import urllib.parse

    proc = spawn()
    now = time.time()
    n = 20_000
    events = [event(f"type{i % 5000}", timestamp=now - i % 50, agent=f"agent{i}", duration_ms=float(i % 997), run_id=f"r{i}") for i in range(n)]
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(proc.unix)
        s.sendall(ndjson(*events))
    assert wait_for_events(proc.url, n)["events"] == n
    host = urllib.parse.urlsplit(proc.url).netloc
    heavy = ["/v1/stats?by=agent&limit=1000", "/v1/stats?window=1h&by=type&limit=1000", "/v1/stats?by=type&agent=agent7", "/v1/stats?workflow=none&by=model", "/v1/stats"]
    answers: list[tuple[int, bytes]] = []  # parsed afterwards: json.loads here would hold this process's GIL
    stop = threading.Event()

    def query() -> None:
        conn = http.client.HTTPConnection(host, timeout=120)
        while not stop.is_set() or len(answers) < len(heavy):
            conn.request("GET", heavy[len(answers) % len(heavy)])
            r = conn.getresponse()
            answers.append((r.status, r.read()))
        conn.close()

    workers = [threading.Thread(target=query) for _ in range(3)]
    for w in workers:
        w.start()
    delays = []
    conn = http.client.HTTPConnection(host, timeout=30)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline or len(answers) < len(heavy):
        t0 = time.perf_counter()
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        r.read()
        delays.append(time.perf_counter() - t0)
        assert r.status == 200
        time.sleep(0.005)
    conn.close()
    stop.set()
    for w in workers:
        w.join(120)
    assert all(status == 200 for status, _ in answers), [(status, body[:200]) for status, body in answers if status != 200]
    assert max(len(body) for _, body in answers) < 8_000_000  # bounded answers
    docs = [json.loads(body) for _, body in answers]
    by_agent = next(doc for doc in docs if "windows" in doc and doc["windows"]["1h"].get("by") == "agent")
    assert len(by_agent["windows"]["1h"]["groups"]) == 1000 and by_agent["windows"]["1h"]["groups_omitted"] == n - 1000
    assert by_agent["windows"]["1h"]["events_by_type_omitted"]["types"] == 5000 - 50
    # Computed on the loop these queries held /healthz for seconds (7 answers in 6 s). Off the loop the
    # 100 ms bound holds for nearly every probe; one probe may also meet a full garbage collection of
    # the whole process (40-100 ms, not the query's doing), so the single worst one gets 250 ms.
    delays.sort()
    p95 = delays[int(len(delays) * 0.95)]
    assert p95 < 0.1, f"/healthz p95 {p95 * 1000:.0f} ms behind /v1/stats ({len(answers)} heavy answers)"
    assert delays[-1] < 0.25, f"/healthz waited {delays[-1] * 1000:.0f} ms behind /v1/stats ({len(answers)} heavy answers)"
    assert len(answers) >= len(heavy) and len(delays) > 20
