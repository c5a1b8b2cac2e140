"""Throughput of one emitting process into a sidecar running in another process.

The bench process emits N events through `sidecar.client.Emitter` as fast as it can (buffer
big enough that none is dropped), then `flush()`es; the rate is N over the time from the
first emit until the sidecar has confirmed reading the last batch, checked against the
sidecar's own sidecar_events_accepted_total. Beside it, `ceiling.py limit` measured in the
same run (what CPython can take off a Unix socket on this machine), and the CPU time each
side spent per event (what the rate would be with a core to itself).

    python bench/client_throughput.py            # N=300000 by default; N=... to change
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sidecar.client import Emitter  # noqa: E402
from sidecar.testing import SidecarProcess  # noqa: E402

N = int(os.environ.get("N", "300000"))
CEILING = os.environ.get("CEILING", "/work/shared/bench/ceiling.py")
FIELDS = dict(
    agent="planner", workflow="code_review", run_id="wf-123456", trace_id="0af7651916cd43dd8448eb211c80319c",
    severity="info", duration_ms=1234.5, input_tokens=512, output_tokens=128, cost_usd=0.0123, model="gpt-4o",
)


def accepted(url: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    m = re.search(r'^sidecar_events_accepted_total\{transport="unix"\} (\S+)$', text, re.M)
    return float(m[1]) if m else 0.0


def ceiling() -> float:
    out = subprocess.run([sys.executable, CEILING, "limit"], capture_output=True, text=True, check=True).stdout
    print(out.strip())
    return float(re.search(r"= ([\d,]+) events/s", out)[1].replace(",", ""))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_rate() -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PYTHONPATH": ROOT}
        proc = SidecarProcess(["--http", "127.0.0.1:0", "--unix", os.path.join(tmp, "s.sock")], env=env)
        try:
            emitter = Emitter(unix=proc.unix, max_buffer=N + 1)
            emit = emitter.emit
            cpu_client, cpu_sidecar = time.process_time(), cpu_seconds(proc.proc.pid)
            started = time.perf_counter()
            for _ in range(N):
                emit("agent.completed", **FIELDS)
            emitted = time.perf_counter()
            assert emitter.flush(120), emitter.stats()
            done = time.perf_counter()
            stats = emitter.stats()
            stats["client_cpu_us_per_event"] = round((time.process_time() - cpu_client) / N * 1e6, 2)
            stats["sidecar_cpu_us_per_event"] = round((cpu_seconds(proc.proc.pid) - cpu_sidecar) / N * 1e6, 2)
            emitter.close()
            got = accepted(proc.url)
            assert got == N and stats["dropped"] == 0, (got, stats)
            stats["emit_loop_s"] = emitted - started
            return N / (done - started), stats
        finally:
            proc.stop()


if __name__ == "__main__":
    limit = ceiling()
    rate, stats = client_rate()
    print(f"client: {N} events emitted in {stats['emit_loop_s']:.2f}s, all accepted by the sidecar at {rate:,.0f} events/s")
    print(f"ratio to ceiling limit: {rate / limit:.2f}")
    print(f"CPU per event: client {stats['client_cpu_us_per_event']} us (emit + encode + send), sidecar {stats['sidecar_cpu_us_per_event']} us")
    print(stats)
