"""GET /v1/stats?window=1h over HTTP with 1,000,000 samples in the 1h window.

    PYTHONPATH=. python bench/window_http.py        # N=1000000 QUERIES=300

Starts a real `agent-sidecar run`, streams N events stamped over the last hour
through the Unix socket, waits until /v1/stats counts them, then times QUERIES
requests on one keep-alive connection (http.client), with no ingest running.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import statistics
import tempfile
import time
import urllib.parse

from sidecar.testing import SidecarProcess

N = int(os.environ.get("N", "1000000"))
QUERIES = int(os.environ.get("QUERIES", "300"))
AGENTS = ["planner", "coder", "reviewer", "tester"]


def get(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path)
    response = conn.getresponse()
    return json.loads(response.read())


def main() -> None:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
        proc = SidecarProcess(["--http", "127.0.0.1:0", "--unix", os.path.join(tmp, "s.sock")], env=env)
        try:
            now = time.time()
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(proc.unix)
                for start in range(0, N, 10_000):
                    s.sendall(b"".join(
                        json.dumps({"type": "agent.completed", "timestamp": now - rng.random() * 3500, "agent": AGENTS[i % 4],
                                    "workflow": "code_review", "model": "gpt-4o", "run_id": f"wf-{i % 50}",
                                    "duration_ms": round(rng.lognormvariate(6, 1), 1), "input_tokens": 512, "output_tokens": 128,
                                    "cost_usd": 0.0123}).encode() + b"\n"
                        for i in range(start, min(N, start + 10_000))
                    ))
            host, port = urllib.parse.urlsplit(proc.url).netloc.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            while get(conn, "/v1/stats?window=1h")["events"] < N:
                time.sleep(0.2)
            for path in ("/v1/stats?window=1h", "/v1/stats?window=1h&agent=coder"):
                get(conn, path)
                ms = []
                for _ in range(QUERIES if "agent" not in path else QUERIES // 3):
                    t0 = time.perf_counter()
                    get(conn, path)
                    ms.append((time.perf_counter() - t0) * 1000)
                q = statistics.quantiles(ms, n=100, method="inclusive")
                print(f"HTTP {path:<36} p50 {q[49]:7.3f} ms   p99 {q[98]:7.3f} ms   max {max(ms):7.3f} ms   ({len(ms)} requests)")
            conn.close()
        except Exception:
            print(proc.output[-3000:])
            raise
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
