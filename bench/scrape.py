"""/metrics at the cardinality cap: a real sidecar process, scraped over real HTTP in both formats.

    python bench/scrape.py [--sets 10000] [--scrapes 5]
    python bench/scrape.py --ingest-seconds 30 # ingest at the cap: unscraped, a plain scraper, a real Prometheus
    python bench/scrape.py --ingest 600000     # the same for a number of events (see --help)
    python bench/scrape.py --ingest-seconds 10 --alternate 8   # one sidecar, Prometheus on and off (ABBA)
    python bench/scrape.py --ingest-seconds 10 --alternate 8 --scraper plain

Loads `--sets` distinct (type, agent, workflow) label sets (each event with a duration, input and
output tokens, a cost and a W3C trace id, so every histogram series has an exemplar), then scrapes
/metrics as Prometheus asks (OpenMetrics) and as a plain client does (text format), with and
without `Accept-Encoding: gzip`. Per scrape: wall time and the sidecar's CPU time (steadier than
wall time on a busy machine), lines and bytes; `CPU s / lines x ceiling.py limit` (probe events
of CPU per exposed line, target <= 1.0); RSS at the cap against an empty sidecar; and what ISA-L's
gzip levels and zlib's cost on this body (the choice in README.md).
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

from isal import isal_zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ceiling_limit, cpu_seconds, machine, realistic_lines, rss_mib, scrape_value, send_ndjson, start_sidecar  # noqa: E402
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


def gzip_levels(body: bytes) -> list[tuple[str, int, float]]:
    """(compressor and level, gzip bytes, best-of-3 CPU seconds): ISA-L's levels 0-3 (what the
    sidecar uses, at GZIP_LEVEL) beside zlib's 1, 3 and 6."""
    out = []
    for name, compress, level in [*(("isal", isal_zlib.compress, n) for n in (0, 1, 2, 3)), *(("zlib", zlib.compress, n) for n in (1, 3, 6))]:
        best = float("inf")
        size = 0
        for _ in range(3):
            t0 = time.process_time()
            size = len(compress(body, level, wbits=31))
            best = min(best, time.process_time() - t0)
        out.append((f"{name} {level}", size, best))
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


def looping_client(path: str, stop, loaded, ready, n: int = 300_000) -> None:
    """bench/ingest.py's `n` realistic events, sent over one connection again and again until `stop`."""
    lines = realistic_lines(n)
    chunks = [b"".join(lines[i : i + 1000]) for i in range(0, n, 1000)]
    loaded.set()
    ready.wait()

    def until_stopped() -> Iterator[bytes]:
        while True:
            for chunk in chunks:
                if stop.is_set():
                    return
                yield chunk

    send_ndjson(path, until_stopped())


def ingest_rate(url: str, unix: str, pid: int, n: int = 0, scraper_pid: int | None = None, seconds: float = 0.0) -> dict[str, float]:
    """For `n` realistic events, or for as many as the sidecar takes in `seconds`: events/s, the
    sidecar's CPU µs per event, /metrics requests served meanwhile, and the CPU seconds the client
    and the scraper (a process: Prometheus) used."""
    base = events_seen(url)
    scrapes0 = scrape_value(url, "sidecar_scrape_duration_seconds_count")
    loaded, ready, stop = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Event()
    if seconds:
        client = multiprocessing.Process(target=looping_client, args=(unix, stop, loaded, ready))
    else:
        client = multiprocessing.Process(target=unix_client, args=(unix, n, loaded, ready))
    client.start()
    loaded.wait()
    assert client.pid is not None
    cpu0, client0 = cpu_seconds(pid), cpu_seconds(client.pid)
    scraper0 = cpu_seconds(scraper_pid) if scraper_pid else 0.0
    t0 = time.perf_counter()
    ready.set()
    client_cpu = 0.0
    if seconds:
        time.sleep(seconds)
        done = events_seen(url) - base  # taken while the client still sends: the clock stops here
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
        client_cpu = cpu_seconds(client.pid) - client0
        stop.set()
        client.join()
    else:
        while client.is_alive():
            client_cpu = cpu_seconds(client.pid) - client0  # read while /proc still has it
            time.sleep(0.05)
        client.join()
        while events_seen(url) < base + n:
            time.sleep(0.05)
        done = n
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
    scraper_cpu = cpu_seconds(scraper_pid) - scraper0 if scraper_pid else 0.0
    scrapes = scrape_value(url, "sidecar_scrape_duration_seconds_count") - scrapes0 - 1  # less our own first read
    return {"rate": done / elapsed, "cpu_us": cpu / done * 1e6, "scrapes": scrapes, "seconds": elapsed,
            "client_cpu": client_cpu, "scraper_cpu": scraper_cpu, "events": done}


@contextlib.contextmanager
def plain_scraper(url: str, every: float = 5.0) -> Iterator[None]:
    """A scraper that costs next to nothing: GET /metrics every `every` s as Prometheus asks
    (OpenMetrics, gzip) and throw the body away. Beside the real Prometheus it separates the
    sidecar's own cost of being scraped from Prometheus' CPU on the same cores."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            scrape(url, OPENMETRICS, True)

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


def ingest_under_prometheus(sets: int, n: int, seconds: float = 0.0) -> None:
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
                    results[scraper] = ingest_rate(proc.url, proc.unix, proc.pid, n, seconds=seconds)
                    continue
                if scraper == "plain":
                    with plain_scraper(proc.url):
                        results[scraper] = ingest_rate(proc.url, proc.unix, proc.pid, n, seconds=seconds)
                    continue
                with prometheus(tmp, urlsplit(proc.url).netloc) as (prom, prom_pid):
                    before = scrape_value(proc.url, "sidecar_scrape_duration_seconds_count")
                    while scrape_value(proc.url, "sidecar_scrape_duration_seconds_count") < before + 2:
                        time.sleep(0.5)  # Prometheus has scraped at least once
                    results[scraper] = ingest_rate(proc.url, proc.unix, proc.pid, n, prom_pid, seconds=seconds)
                    up = json.load(urllib.request.urlopen(f"{prom}/api/v1/query?query=scrape_duration_seconds", timeout=10))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    alone = results["none"]
    what = f"for {seconds:g} s each" if seconds else f"{n:,} each"
    print(f"ingest at the cap ({sets:,} label sets loaded), realistic events over the Unix socket {what}, load average {os.getloadavg()[0]:.2f}")
    print("| scraper (every 5 s) | events | seconds | events/s | sidecar CPU/event | /metrics requests in the run | client CPU | scraper CPU | ratio (target >= 0.80) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, label in (("none", "none"), ("plain", "plain GET, gzip"), ("prometheus", "Prometheus")):
        r = results[name]
        busy = r["scraper_cpu"] / r["seconds"]
        print(f"| {label} | {r['events']:,.0f} | {r['seconds']:.1f} | {r['rate']:,.0f} | {r['cpu_us']:.1f} µs | {r['scrapes']:.0f} | {r['client_cpu']:.1f} s "
              f"| {r['scraper_cpu']:.1f} s ({busy:.2f} of a core) | {r['rate'] / alone['rate']:.2f} |")
    print(f"Prometheus' last scrape_duration_seconds: {[r['value'][1] for r in up['data']['result']]}")


@contextlib.contextmanager
def switched_scraper(url: str, every: float = 5.0) -> Iterator[threading.Event]:
    """The plain scraper, scraping while the event it yields is set: at once when set, then every
    `every` s (as a continued Prometheus does)."""
    on, stop = threading.Event(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if not on.wait(0.05):
                continue
            next_at = time.monotonic() + every
            scrape(url, OPENMETRICS, True)
            while on.is_set() and not stop.is_set() and time.monotonic() < next_at:
                time.sleep(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield on
    finally:
        stop.set()
        thread.join()


def ingest_alternating(sets: int, seconds: float, segments: int, scraper: str) -> None:
    """One sidecar at the cap ingesting without pause for `segments` segments of `seconds` each,
    scraped every 5 s in half of them, in the order ABBA ABBA... (A: not scraped), by a real
    Prometheus or the plain scraper. Fresh sidecars per mode, or modes one after another, compare
    runs minutes apart, and this VM's speed moves by 1.4x in that time; alternating on one sidecar,
    in an order that cancels a steady drift (the windows filling), leaves the scrapes as the
    difference.

    Prometheus is stopped (SIGSTOP) for an A segment and continued (SIGCONT) for a B one, not
    reconfigured: taking the target away makes it write a stale marker for each of the ~190k
    series, and giving it back makes it append to them all again, work a Prometheus that keeps
    scraping never does (seen: 1.9 s of its CPU inside the next unscraped segment). Continued, it
    scrapes at once (the tick it missed) and then every 5 s, as the plain scraper does here, so a B
    pair scrapes a little more often than every 5 s; the sidecar counts the scrapes it served."""
    order = [(i % 4) in (1, 2) for i in range(segments)]  # True: scraped
    lines = cap_lines(sets)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        proc = start_loaded(tmp, lines)
        stack.callback(proc.wait, 30)
        stack.callback(proc.send_signal, signal.SIGTERM)
        prom_pid = None
        if scraper == "prometheus":
            prom, prom_pid = stack.enter_context(prometheus(tmp, urlsplit(proc.url).netloc))
            before = scrape_value(proc.url, "sidecar_scrape_duration_seconds_count")
            while scrape_value(proc.url, "sidecar_scrape_duration_seconds_count") < before + 3:
                time.sleep(0.5)  # two by Prometheus: its first creates the ~190k series in its head, before the clock
            os.kill(prom_pid, signal.SIGSTOP)
            stack.callback(os.kill, prom_pid, signal.SIGCONT)  # so that it can be terminated

            def switch(on: bool) -> None:
                os.kill(prom_pid, signal.SIGCONT if on else signal.SIGSTOP)
        else:
            plain_on = stack.enter_context(switched_scraper(proc.url))

            def switch(on: bool) -> None:
                plain_on.set() if on else plain_on.clear()
        served0 = scrape_value(proc.url, "sidecar_scrape_duration_seconds_count")  # itself one
        loaded, ready, stop = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Event()
        client = multiprocessing.Process(target=looping_client, args=(proc.unix, stop, loaded, ready))
        client.start()
        stack.callback(client.join, 60)
        stack.callback(stop.set)
        loaded.wait()
        ready.set()
        time.sleep(2.0)  # past the connection's first reads
        rows = []
        for i, scraped in enumerate(order):
            if i == 0 or scraped != order[i - 1]:
                switch(scraped)
            prom0 = cpu_seconds(prom_pid) if prom_pid else 0.0
            seen0, cpu0, t0 = events_seen(proc.url), cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(seconds)
            seen1, cpu1, t1 = events_seen(proc.url), cpu_seconds(proc.pid), time.perf_counter()
            prom1 = cpu_seconds(prom_pid) if prom_pid else 0.0
            rows.append((scraped, seen1 - seen0, t1 - t0, cpu1 - cpu0, prom1 - prom0))
        switch(False)
        scrapes = scrape_value(proc.url, "sidecar_scrape_duration_seconds_count") - served0 - 1  # less this read
    who = "a real Prometheus" if scraper == "prometheus" else "the plain scraper (OpenMetrics, gzip)"
    print(f"ingest at the cap ({sets:,} label sets loaded), one sidecar, realistic events over the Unix socket without pause; "
          f"{segments} segments of {seconds:g} s, ABBA (B: {who} scraping every 5 s); load average {os.getloadavg()[0]:.2f}")
    print("| segment | scraped | events | seconds | events/s | sidecar CPU/event | Prometheus CPU |")
    print("|---|---|---|---|---|---|---|")
    for i, (scraped, events, secs, cpu, prom_cpu) in enumerate(rows, 1):
        print(f"| {i} | {'yes' if scraped else 'no'} | {events:,} | {secs:.1f} | {events / secs:,.0f} | {cpu / events * 1e6:.2f} µs | {prom_cpu:.1f} s |")
    totals = {flag: [sum(r[k] for r in rows if r[0] == flag) for k in (1, 2, 3)] for flag in (False, True)}
    (a_events, a_secs, a_cpu), (b_events, b_secs, b_cpu) = totals[False], totals[True]
    print(f"not scraped: {a_events / a_secs:,.0f} events/s ({a_cpu / a_events * 1e6:.2f} µs/event); "
          f"scraped: {b_events / b_secs:,.0f} events/s ({b_cpu / b_events * 1e6:.2f} µs/event), {scrapes:.0f} scrapes served "
          f"in {b_secs:.0f} s of scraped segments")
    print(f"ratio (target >= 0.80): {(b_events / b_secs) / (a_events / a_secs):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=10_000)
    ap.add_argument("--scrapes", type=int, default=5)
    ap.add_argument("--ingest", type=int, default=0, help="events to ingest unscraped and under a real Prometheus")
    ap.add_argument("--ingest-seconds", type=float, default=0.0,
                    help="ingest for this long in each mode instead (a multiple of the 5 s interval: a run shorter than a few intervals scrapes faster than every 5 s)")
    ap.add_argument("--alternate", type=int, default=0, metavar="SEGMENTS",
                    help="with --ingest-seconds (per segment): one sidecar, scraped in every other pair of segments (ABBA)")
    ap.add_argument("--scraper", choices=["prometheus", "plain"], default="prometheus", help="who scrapes, with --alternate")
    args = ap.parse_args()
    if args.alternate:
        print(f"machine: {machine()}")
        print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
        ingest_alternating(args.sets, args.ingest_seconds or 10.0, args.alternate, args.scraper)
        return
    if args.ingest or args.ingest_seconds:
        print(f"machine: {machine()}")
        print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
        ingest_under_prometheus(args.sets, args.ingest, args.ingest_seconds)
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
    print("| gzip (OpenMetrics body) | bytes | ratio | CPU |")
    print("|---|---|---|---|")
    for level, size, cpu in gzip_levels(plain):
        print(f"| {level} | {size:,} | {len(plain) / size:.1f}x | {cpu * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
