"""/metrics at the cardinality cap: a real sidecar process, scraped over real HTTP in both formats.

    python bench/scrape.py [--sets 10000] [--scrapes 5]
    python bench/scrape.py --ingest 600000     # ingest at the cap: unscraped, a plain scraper, a real Prometheus

Loads `--sets` distinct (type, agent, workflow) label sets (each event with a duration, input and
output tokens, a cost and a W3C trace id, so every histogram series has an exemplar), then scrapes
/metrics as Prometheus asks (OpenMetrics) and as a plain client does (text format), with and
without `Accept-Encoding: gzip`. Per scrape: wall time and the sidecar's CPU time (steadier than
wall time on a busy machine), lines and bytes; `CPU s / lines x ceiling.py limit` (probe events
of CPU per exposed line, target <= 1.0); RSS at the cap against an empty sidecar; and what gzip
levels 1, 3 and 6 cost on this body (the level choice in README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ceiling_limit, cpu_seconds, machine, rss_mib, scrape_value, send_ndjson, start_sidecar  # noqa: E402
from ingest import unix_client  # noqa: E402

OPENMETRICS = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
TEXT = "text/plain;version=0.0.4"
TYPES = ["llm.call", "tool.call", "retrieval", "guardrail.check"]
WORKFLOWS = ["code_review", "research", "triage", "support", "planning"]
MODELS = ["gpt-4o", "claude-sonnet"]


def cap_lines(sets: int, per_set: int = 2, seed: int = 1) -> list[bytes]:
    """`per_set` events for each of `sets` distinct (type, agent, workflow) label sets."""
    rnd = random.Random(seed)
    now = time.time()
    lines = []
    for _ in range(per_set):
        for i in range(sets):
            ev = {
                "type": TYPES[i % len(TYPES)],
                "timestamp": now,
                "agent": f"agent-{i:05d}",
                "workflow": WORKFLOWS[i % len(WORKFLOWS)],
                "model": MODELS[i % len(MODELS)],
                "trace_id": f"{rnd.getrandbits(128):032x}",
                "span_id": f"{rnd.getrandbits(64):016x}",
                "duration_ms": round(rnd.lognormvariate(6, 1.2), 2),
                "input_tokens": rnd.randrange(50, 4000),
                "output_tokens": rnd.randrange(10, 1500),
                "cost_usd": round(rnd.random() / 50, 6),
            }
            lines.append(json.dumps(ev, separators=(",", ":")).encode() + b"\n")
    return lines


def scrape(url: str, accept: str, gzip: bool) -> tuple[float, bytes, str]:
    """(wall seconds, body as sent, content encoding) of one GET /metrics on a fresh connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {"Accept": accept}
    if gzip:
        headers["Accept-Encoding"] = "gzip"
    t0 = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    wall = time.perf_counter() - t0
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"/metrics answered {resp.status}")
    return wall, body, resp.getheader("Content-Encoding") or ""


def measure(url: str, pid: int, accept: str, gzip: bool, n: int) -> dict[str, float]:
    walls, cpus = [], []
    body, encoding = b"", ""
    for _ in range(n):
        c0 = cpu_seconds(pid)
        wall, body, encoding = scrape(url, accept, gzip)
        cpus.append(cpu_seconds(pid) - c0)
        walls.append(wall)
    plain = zlib.decompress(body, 16 + zlib.MAX_WBITS) if encoding == "gzip" else body
    return {
        "wall_med": statistics.median(walls),
        "wall_min": min(walls),
        "cpu_med": statistics.median(cpus),
        "cpu_min": min(cpus),
        "lines": plain.count(b"\n"),
        "bytes": len(body),
        "gzip": encoding == "gzip",
        "plain": plain,  # type: ignore[dict-item]
    }


def gzip_levels(body: bytes) -> list[tuple[int, int, float]]:
    """(level, compressed bytes, best-of-3 CPU seconds) for levels 1, 3 and 6."""
    out = []
    for level in (1, 3, 6):
        best = float("inf")
        size = 0
        for _ in range(3):
            t0 = time.process_time()
            size = len(zlib.compress(body, level))
            best = min(best, time.process_time() - t0)
        out.append((level, size, best))
    return out


@contextlib.contextmanager
def prometheus(tmp: str, target: str, interval: str = "5s") -> Iterator[tuple[str, int]]:
    """A real Prometheus (the Debian binary) scraping `target` (host:port) every `interval`: its URL and pid."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"global: {{scrape_interval: {interval}, scrape_timeout: {interval}}}\n"
                f"scrape_configs: [{{job_name: sidecar, static_configs: [{{targets: ['{target}']}}]}}]\n")
    proc = subprocess.Popen(
        [shutil.which("prometheus") or "prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def events_seen(url: str) -> int:
    """Events the window sink (fed after the metrics sink) has consumed since start: a cheap
    progress probe, where polling /metrics at the cap would itself be a full scrape."""
    with urllib.request.urlopen(url + "/v1/stats", timeout=60) as r:
        return int(json.load(r)["cumulative"]["events"])


def ingest_rate(url: str, unix: str, pid: int, n: int, scraper_pid: int | None = None) -> dict[str, float]:
    """For `n` realistic events: events/s, the sidecar's CPU µs per event, /metrics requests served
    meanwhile, and the CPU seconds the client and the scraper (a process: Prometheus) used."""
    base = events_seen(url)
    scrapes0 = scrape_value(url, "sidecar_scrape_duration_seconds_count")
    loaded, ready = multiprocessing.Event(), multiprocessing.Event()
    client = multiprocessing.Process(target=unix_client, args=(unix, n, loaded, ready))
    client.start()
    loaded.wait()
    assert client.pid is not None
    cpu0, client0 = cpu_seconds(pid), cpu_seconds(client.pid)
    scraper0 = cpu_seconds(scraper_pid) if scraper_pid else 0.0
    t0 = time.perf_counter()
    ready.set()
    client_cpu = 0.0
    while client.is_alive():
        client_cpu = cpu_seconds(client.pid) - client0  # read while /proc still has it
        time.sleep(0.05)
    client.join()
    while events_seen(url) < base + n:
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    scraper_cpu = cpu_seconds(scraper_pid) - scraper0 if scraper_pid else 0.0
    scrapes = scrape_value(url, "sidecar_scrape_duration_seconds_count") - scrapes0 - 1  # less our own first read
    return {"rate": n / elapsed, "cpu_us": cpu / n * 1e6, "scrapes": scrapes, "seconds": elapsed,
            "client_cpu": client_cpu, "scraper_cpu": scraper_cpu}


@contextlib.contextmanager
def plain_scraper(url: str, every: float = 5.0) -> Iterator[None]:
    """A scraper that costs next to nothing: GET /metrics every `every` s as Prometheus asks
    (OpenMetrics, gzip) and throw the body away. Beside the real Prometheus it separates the
    sidecar's own cost of being scraped from Prometheus' CPU on the same cores."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            req = urllib.request.Request(url + "/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": "gzip"})
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def start_loaded(tmp: str, lines: list[bytes]):  # -> sidecar.testing.SidecarProcess
    """A fresh sidecar that has taken `lines` (the label sets of the cap), ready to measure."""
    proc = start_sidecar(tmp)
    try:
        send_ndjson(proc.unix, [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)])
        while scrape_value(proc.url, "sidecar_events_processed_total") < len(lines):
            time.sleep(0.1)
    except BaseException:
        proc.terminate()
        proc.wait(30)
        raise
    return proc


def ingest_under_prometheus(sets: int, n: int) -> None:
    """Ingest at the cap: unscraped, with a plain scraper and with a real Prometheus, each every 5 s
    and each on a fresh sidecar loaded with the same label sets. (One sidecar for all compared a
    later run, into windows and insights already holding the earlier runs' events, with the first:
    at 600k events that alone cost ~5 µs per event more, scrapes or not.)"""
    lines = cap_lines(sets)
    results = {}
    up: dict = {}
    for scraper in ("none", "plain", "prometheus"):
        with tempfile.TemporaryDirectory() as tmp:
            proc = start_loaded(tmp, lines)
            try:
                if scraper == "none":
                    results[scraper] = ingest_rate(proc.url, proc.unix, proc.pid, n)
                    continue
                if scraper == "plain":
                    with plain_scraper(proc.url):
                        results[scraper] = ingest_rate(proc.url, proc.unix, proc.pid, n)
                    continue
                with prometheus(tmp, urlsplit(proc.url).netloc) as (prom, prom_pid):
                    before = scrape_value(proc.url, "sidecar_scrape_duration_seconds_count")
                    while scrape_value(proc.url, "sidecar_scrape_duration_seconds_count") < before + 2:
                        time.sleep(0.5)  # Prometheus has scraped at least once
                    results[scraper] = ingest_rate(proc.url, proc.unix, proc.pid, n, prom_pid)
                    up = json.load(urllib.request.urlopen(f"{prom}/api/v1/query?query=scrape_duration_seconds", timeout=10))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    alone = results["none"]
    print(f"ingest at the cap ({sets:,} label sets loaded), {n:,} realistic events over the Unix socket, load average {os.getloadavg()[0]:.2f}")
    print("| scraper (every 5 s) | events/s | sidecar CPU/event | /metrics requests in the run | client CPU | scraper CPU | ratio (target >= 0.80) |")
    print("|---|---|---|---|---|---|---|")
    for name, label in (("none", "none"), ("plain", "plain GET, gzip"), ("prometheus", "Prometheus")):
        r = results[name]
        busy = r["scraper_cpu"] / r["seconds"]
        print(f"| {label} | {r['rate']:,.0f} | {r['cpu_us']:.1f} µs | {r['scrapes']:.0f} | {r['client_cpu']:.1f} s "
              f"| {r['scraper_cpu']:.1f} s ({busy:.2f} of a core) | {r['rate'] / alone['rate']:.2f} |")
    print(f"Prometheus' last scrape_duration_seconds: {[r['value'][1] for r in up['data']['result']]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=10_000)
    ap.add_argument("--scrapes", type=int, default=5)
    ap.add_argument("--ingest", type=int, default=0, help="events to ingest unscraped and under a real Prometheus")
    args = ap.parse_args()
    if args.ingest:
        print(f"machine: {machine()}")
        print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
        ingest_under_prometheus(args.sets, args.ingest)
        return
    limit = ceiling_limit()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print(f"ceiling.py limit: {limit:,.0f} events/s")
    lines = cap_lines(args.sets)
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp)
        try:
            scrape(proc.url, TEXT, False)
            rss_empty = rss_mib(proc.pid)
            send_ndjson(proc.unix, [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)])
            while scrape_value(proc.url, "sidecar_events_processed_total") < len(lines):
                time.sleep(0.1)
            series = scrape_value(proc.url, "sidecar_series")
            results = {}
            for name, accept in (("OpenMetrics", OPENMETRICS), ("text", TEXT)):
                for gz in (False, True):
                    results[name, gz] = measure(proc.url, proc.pid, accept, gz, args.scrapes)
            rss_full = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"label sets: {args.sets:,}, events: {len(lines):,}, series (sidecar_series): {series:,.0f}")
    print(f"scrapes per row: {args.scrapes}, load average after: {os.getloadavg()[0]:.2f}")
    print("| format | gzip | wall median (min) | sidecar CPU median (min) | lines | bytes | CPU s / lines x limit |")
    print("|---|---|---|---|---|---|---|")
    for (name, gz), r in results.items():
        print(
            f"| {name} | {'yes' if gz else 'no'}{'' if r['gzip'] == gz else ' (not honoured)'} "
            f"| {r['wall_med'] * 1000:.0f} ms ({r['wall_min'] * 1000:.0f}) | {r['cpu_med'] * 1000:.0f} ms ({r['cpu_min'] * 1000:.0f}) "
            f"| {r['lines']:,} | {r['bytes']:,} | {r['cpu_med'] / r['lines'] * limit:.2f} |"
        )
    print(f"RSS: empty {rss_empty:.1f} MiB, at the cap {rss_full:.1f} MiB: "
          f"{(rss_full - rss_empty) * 1024 * 1024 / max(series, 1):,.0f} bytes per exposed series")
    plain = results["OpenMetrics", False]["plain"]
    assert isinstance(plain, bytes)
    print("| gzip level (OpenMetrics body) | bytes | ratio | CPU |")
    print("|---|---|---|---|")
    for level, size, cpu in gzip_levels(plain):
        print(f"| {level} | {size:,} | {len(plain) / size:.1f}x | {cpu * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
