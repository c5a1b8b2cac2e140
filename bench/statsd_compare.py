"""The sidecar beside the real statsd_exporter: the same agent events, the same machine, one run.

    python bench/statsd_compare.py --statsd-exporter /path/to/statsd_exporter [--events 300000] [--rounds 2]

statsd_exporter is what many teams would reach for instead: it turns statsd lines into Prometheus
series. An agent event becomes five DogStatsD lines with the sidecar's own names and labels:

    agent_events:1|c|#type:llm.call,agent:agent-03,workflow:triage,severity:info
    agent_event_duration_seconds:812.5|ms|#type:llm.call,agent:agent-03,workflow:triage
    agent_tokens:1200|c|#agent:agent-03,model:gpt-4o,token_type:input
    agent_tokens:340|c|#agent:agent-03,model:gpt-4o,token_type:output
    agent_cost_usd:0.0123|c|#agent:agent-03,model:gpt-4o

sent over one TCP connection (statsd_exporter's lossless listener; UDP drops under load), with
histograms of the sidecar's default buckets. The sidecar gets the same events as NDJSON over its
Unix socket with every sink on (bench/ingest.py), so it also does what statsd_exporter does not:
errors, tool calls, lifecycles, exemplars, the exact windows and the tail.

Each side's clock stops when it has counted every event (statsd_exporter_events_total, or
sidecar_events_processed_total); its CPU is read from /proc. The figure that compares them is
events per CPU-second; events/s is also given beside `ceiling.py limit`. Rounds alternate which
side goes first.

statsd_exporter is not a dependency of this project: build it yourself (BENCHMARKS.md says how it
was built for the figures there) and pass its path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, ceiling_limit, machine, realistic_lines, timed_load  # noqa: E402
from ingest import run as sidecar_run  # noqa: E402

sys.path.insert(0, REPO)
from sidecar.config import DEFAULT_BUCKETS  # noqa: E402
from sidecar.testing import wait_until  # noqa: E402

LINES_PER_EVENT = 5


def statsd_lines(n: int) -> list[bytes]:
    """bench/ingest.py's n events (the same seed), each as five DogStatsD lines."""
    out = []
    for line in realistic_lines(n):
        ev = json.loads(line)
        severity = "error" if ev["type"].endswith(".failed") else "info"
        event = f"type:{ev['type']},agent:{ev['agent']},workflow:{ev['workflow']}"
        spend = f"agent:{ev['agent']},model:{ev['model']}"
        out.append(
            f"agent_events:1|c|#{event},severity:{severity}\n"
            f"agent_event_duration_seconds:{ev['duration_ms']}|ms|#{event}\n"
            f"agent_tokens:{ev['input_tokens']}|c|#{spend},token_type:input\n"
            f"agent_tokens:{ev['output_tokens']}|c|#{spend},token_type:output\n"
            f"agent_cost_usd:{ev['cost_usd']}|c|#{spend}\n".encode()
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/metrics", timeout=5).read()
        return True
    except OSError:
        return False


def tcp_client(port: int, n: int, loaded, ready) -> None:
    lines = statsd_lines(n)
    chunks = [b"".join(lines[i : i + 1000]) for i in range(0, n, 1000)]
    loaded.set()
    ready.wait()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for chunk in chunks:
            s.sendall(chunk)


def statsd_run(binary: str, n: int) -> dict:
    web, tcp = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        mapping = os.path.join(tmp, "mapping.yaml")
        with open(mapping, "w") as f:  # JSON is YAML
            json.dump({"defaults": {"observer_type": "histogram", "histogram_options": {"buckets": list(DEFAULT_BUCKETS)}}, "mappings": []}, f)
        proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{web}", "--statsd.listen-udp=", f"--statsd.listen-tcp=127.0.0.1:{tcp}",
             f"--statsd.mapping-config={mapping}", "--log.level=warn"],
        )
        url = f"http://127.0.0.1:{web}"
        try:
            wait_until(lambda: serving(url) or proc.poll() is not None, f"{binary} serving /metrics", timeout=30)
            if proc.poll() is not None:
                raise SystemExit(f"{binary} exited with {proc.returncode}")
            elapsed, cpu = timed_load(proc.pid, url, "statsd_exporter_events_total", n * LINES_PER_EVENT, tcp_client, tcp, n)
        finally:
            proc.terminate()
            proc.wait(30)
    return {"events": n, "seconds": elapsed, "rate": n / elapsed, "cpu_us": cpu / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--statsd-exporter", default=os.environ.get("STATSD_EXPORTER") or shutil.which("statsd_exporter"))
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not args.statsd_exporter or not os.access(args.statsd_exporter, os.X_OK):
        raise SystemExit("no statsd_exporter binary: pass --statsd-exporter PATH or set STATSD_EXPORTER")
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; statsd_exporter: {args.statsd_exporter}")
    print("| round | system | events | events/s | x probe | CPU/event | events per CPU-second |")
    print("|---|---|---|---|---|---|---|")
    per_cpu: dict[str, list[float]] = {"sidecar": [], "statsd_exporter": []}
    for r in range(args.rounds):
        order = ["sidecar", "statsd_exporter"] if r % 2 == 0 else ["statsd_exporter", "sidecar"]
        for system in order:
            before = ceiling_limit()
            res = sidecar_run("unix", args.events) if system == "sidecar" else statsd_run(args.statsd_exporter, args.events)
            limit = (before + ceiling_limit()) / 2
            per_cpu[system].append(events_per_cpu_second := 1e6 / res["cpu_us"])
            print(
                f"| {r + 1} | {system} | {res['events']:,} | {res['rate']:,.0f} | {res['rate'] / limit:.2f} | "
                f"{res['cpu_us']:.1f} µs | {events_per_cpu_second:,.0f} |"
            )
    ratios = [s / x for s, x in zip(per_cpu["sidecar"], per_cpu["statsd_exporter"])]
    print(f"sidecar events per CPU-second / statsd_exporter's, by round: {', '.join(f'{x:.2f}' for x in ratios)}")


if __name__ == "__main__":
    main()
