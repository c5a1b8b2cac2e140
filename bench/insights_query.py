"""GET /v1/insights (default 15m window, 1h baseline) with ~1,000,000 duration samples in the hour.

    PYTHONPATH=$PWD python3 bench/insights_query.py          # WORKFLOWS=1800 QUERIES=200 [PYSPY=/tmp]

Starts a real `agent-sidecar run` (default config), sends the demo's `healthy` stream with
WORKFLOWS concurrent runs over the last 58 minutes (history stamped back from now) through the
Unix socket, waits until the pipeline has filed it, then times QUERIES requests on one keep-alive
connection. Ingest stall: while another connection repeats the query, /healthz is timed every
5 ms (the event loop answers it, so its latency is how long the loop was held); the same is done
while /v1/stats?window=1h&type=llm.call&by=agent repeats, for comparison.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine, send_ndjson, start_sidecar  # noqa: E402
from sidecar.commands.demo import Simulation, history  # noqa: E402

WORKFLOWS = int(os.environ.get("WORKFLOWS", "1800"))
QUERIES = int(os.environ.get("QUERIES", "200"))
SPAN = 3300.0  # 55 min: generating the stream takes minutes, and it must stay inside the hour
INSIGHTS = "/v1/insights"
STATS = "/v1/stats?window=1h&type=llm.call&by=agent"


def connect(url: str) -> http.client.HTTPConnection:
    host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=120)


def get(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body[:300]
    return json.loads(body)


def profile(pid: int, path: str) -> subprocess.Popen[bytes] | None:
    """With PYSPY=DIR: py-spy records the sidecar (every thread, idle ones too, so a wait shows) while
    `path` repeats, as a speedscope file in DIR."""
    where = os.environ.get("PYSPY")
    if not where or path != INSIGHTS:
        return None
    out = os.path.join(where, "insights_query.speedscope.json")
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "250", "--idle", "--threads", "--gil" if os.environ.get("PYSPY_GIL") else "--native",
                            "--format", "speedscope", "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached before the first request
    return spy


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the sidecar process so far (every thread), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of the process so far, in ns (schedstat: finer than /proc/PID/stat's ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a worker thread that just ended
            pass
    return total


def quantiles(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {q[49]:7.1f} ms   p99 {q[98]:7.1f} ms   max {max(ms):7.1f} ms   ({len(ms)} requests)"


def stall(url: str, path: str, seconds: float = 20.0) -> str:
    """/healthz latency while `path` is requested in a loop on another connection."""
    stop = threading.Event()

    def hammer() -> None:
        conn = connect(url)
        while not stop.is_set():
            get(conn, path)

    thread = threading.Thread(target=hammer)
    thread.start()
    conn = connect(url)
    ms: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        ms.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.005)
    stop.set()
    thread.join()
    return quantiles(ms)


def restamp(lines: list[bytes], end: float) -> list[bytes]:
    """Shift every timestamp by the time generation took, so the history ends about now."""
    shift = time.time() - end
    out = []
    for line in lines:
        ev = json.loads(line)
        ev["timestamp"] = round(ev["timestamp"] + shift, 3)
        out.append(json.dumps(ev, separators=(",", ":")).encode())
    return out


def main() -> None:
    t0 = time.perf_counter()
    sim = Simulation(1, WORKFLOWS)
    end = time.time()
    lines = list(history(sim, SPAN, end))
    samples = sum(1 for line in lines if b'"duration_ms"' in line)
    lines = restamp(lines, end)
    print(f"{machine()}; {len(lines):,} events ({samples:,} with a duration) generated in {time.perf_counter() - t0:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp)
        try:
            send_ndjson(proc.unix, b"\n".join(lines) + b"\n")
            conn = connect(proc.url)
            filed = -1
            while (now := get(conn, "/v1/stats?window=1h")["events"]) != filed:  # until the pipeline has filed it all
                filed = now
                time.sleep(2)
            print(f"{filed:,} events in the 1h window")
            doc = get(conn, INSIGHTS)
            print(f"findings above info: {sum(f['severity'] != 'info' for f in doc['findings'])}; checked {sum(doc['checked'].values())} subjects")
            for path, n in ((INSIGHTS, QUERIES), (STATS, QUERIES // 2)):
                ms, cpu_ms = [], []
                spy = profile(proc.pid, path)
                cpu0 = cpu_seconds(proc.pid)
                for _ in range(n):
                    c1 = cpu_ns(proc.pid)
                    t1 = time.perf_counter()
                    get(conn, path)
                    ms.append((time.perf_counter() - t1) * 1000)
                    cpu_ms.append((cpu_ns(proc.pid) - c1) / 1e6)
                # the sidecar's CPU per request (no ingest runs: the pipeline's maintain is the rest),
                # steadier than wall time on a shared machine
                cpu = (cpu_seconds(proc.pid) - cpu0) / n * 1000
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                    spy.wait(60)
                print(f"HTTP {path:<44} {quantiles(ms)}   sidecar CPU {cpu:.1f} ms/request")
                # the sidecar's CPU (all threads) during each request: the request's own work when the
                # machine is shared, so a slow wall time with little CPU was time waiting for a core
                print(f"     sidecar CPU per request {'':<25} {quantiles(cpu_ms)}")
            for path in (INSIGHTS, STATS):
                print(f"/healthz while {path:<34} {stall(proc.url, path)}")
            print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
