"""Soak a real sidecar process: steady load with label churn, scrapes every second, leaks checked.

    python bench/soak.py [--duration 30m] [--rate N | --fraction 0.5] [--churn 60] [--json PATH]
                         [--reload-every 60s] [--snapshot-every 30s]

1. Starts `agent-sidecar run` with a short series TTL and a per-metric cap, so both
   series expiry and the cardinality cap are exercised by the churn.
2. Measures the maximum Unix ingest rate for a few seconds (unless --rate is given)
   and loads at `--fraction` of it: 90% of events over the Unix socket, 10% as HTTP
   POST batches, with new agent and workflow names every `--churn` seconds.
3. Scrapes /metrics every second (timed), and records RSS, open fds, asyncio tasks,
   the number of exposed series and the conservation counters; meanwhile 10 live-tail
   clients are connected (3 of them never read) and /v1/stats is polled every 100 ms.
   Every `--reload-every` the config file is rewritten with two live keys changed
   (metrics.series_ttl, tail.client_queue) and reloaded, by `POST /-/reload` and SIGHUP in
   turn; each reload must answer (or log) both changes and move
   sidecar_config_last_reload_success_timestamp_seconds, with _successful at 1. The windows
   are saved to a snapshot file every `--snapshot-every` (windows.snapshot_path); each save's
   size, duration and longest event-loop pause are read from the sidecar_window_snapshot_* gauges.
4. Stops the load, waits for the backlog to drain, checks conservation exactly
   (sent = received = accepted + rejected + dropped, processed = accepted), sends
   SIGTERM and reads the final totals line. Then the snapshot file must be fresh (written
   at the SIGTERM), and a new sidecar started on it must restore it: its /v1/stats
   `cumulative.events` equal to the old one's, which equals the events processed.

Prints a Markdown summary; --json writes every sample. Exit status 1 when an
invariant is broken (the 30-second smoke test in the suite relies on that).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, ceiling_limit, machine, rss_mib, start_sidecar  # noqa: E402

sys.path.insert(0, REPO)
from sidecar.client.senders import HttpSender, UnixSender  # noqa: E402
from sidecar.config import parse_duration  # noqa: E402

TYPES = ["llm.call", "tool.call", "agent.invoked", "agent.completed", "agent.failed", "workflow.started", "workflow.completed"]
CHUNK = 100  # events per Unix write / HTTP body
SERIES_CAP = 700  # metrics.max_series_per_metric: with 16 lines per histogram series, ~14k lines
SERIES_TTL = "3m"  # metrics.series_ttl for the soak
WINDOWS = ("1m", "3m")
SCRAPE_TIMEOUT = 120  # seconds: under load on 2 shared cores a scrape at ~15k series has taken 19 s (p99)  # windows.durations for the soak (the default's 1h would need an hour to fill)


def chunks_for(generation: int, n: int = 10) -> list[bytes]:
    """Chunks whose agent and workflow names belong to one churn generation (~1000 label sets)."""
    return [lines_for(generation, k) for k in range(n)]


def soak_config(generation: int, snapshot_path: str, snapshot_every: float) -> str:
    """The soak's config; each generation (one per reload) changes two live keys to other values."""
    ttl = parse_duration(SERIES_TTL) + generation % 2  # 180 s / 181 s: a real change, the same expiry
    snapshot = f"  snapshot_path: {snapshot_path}\n  snapshot_every: {snapshot_every:g}s\n" if snapshot_path else ""
    return (
        f"metrics:\n  max_series_per_metric: {SERIES_CAP}\n  series_ttl: {ttl:g}s\n"
        f"windows:\n  durations: [{', '.join(WINDOWS)}]\n{snapshot}"
        f"tail:\n  client_queue: {10_000 - 1_000 * (generation % 2)}\nlog:\n  level: info\n"
        # The insights store keeps every duration for insights.retention (1h by default): short, so
        # memory reaches its steady state within the warm-up, as the windows do.
        "insights:\n  window: 1m\n  baseline: 5m\n  retention: 5m\n"
    )


RELOADED_KEYS = {"metrics.series_ttl", "tail.client_queue"}  # what every reload of soak_config changes


def lines_for(generation: int, k: int = 0) -> bytes:
    """CHUNK events over 20 agents (the k-th group of this generation) x 5 workflows x 7 types."""
    out = []
    for i in range(CHUNK):
        t = TYPES[i % len(TYPES)]
        ev = {
            "type": t,
            "agent": f"agent-g{generation}-{k * 20 + i % 20}",
            "workflow": f"wf-g{generation}-{i % 5}",
            "model": ("gpt-4o", "claude-sonnet")[i % 2],
            "run_id": f"run-{generation}-{i % 10}",
            "invocation_id": f"inv-{generation}-{i}",
            "duration_ms": 10.0 + i,
            "input_tokens": 100 + i,
            "output_tokens": 20 + i,
            "cost_usd": 0.0001 * i,
        }
        if t.endswith(".failed"):
            ev["error"] = "timeout"
        out.append(json.dumps(ev, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def load(unix: str, url: str, rate: float, churn: float, stop, sent_unix, sent_http, http_share: float = 0.1) -> None:
    """Send `rate` events/s until `stop` is set (runs in its own process)."""
    started = time.monotonic()
    generation, chunks = 0, chunks_for(0)
    sock = UnixSender(unix, timeout=None)
    conn = HttpSender(url, timeout=120)
    done_unix = done_http = 0
    every_http = max(1, round(1 / http_share)) if http_share else 0
    n = 0
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if int(elapsed // churn) != generation:
            generation = int(elapsed // churn)
            chunks = chunks_for(generation)
        due = int(rate * elapsed) // CHUNK - n
        if due <= 0:
            time.sleep(0.01)
            continue
        for _ in range(min(due, 1000)):
            n += 1
            chunk = chunks[n % len(chunks)]
            if every_http and n % every_http == 0:
                if conn.post(chunk).status == 202:
                    done_http += CHUNK
                    sent_http.value = done_http
            else:
                sock.send(chunk)
                done_unix += CHUNK
                sent_unix.value = done_unix
    sock.close()
    conn.close()


def blast(unix: str, seconds: float, sent) -> None:
    """As fast as one client can write, for `seconds` (to measure the maximum rate)."""
    chunk = lines_for(999_999) * 10
    end = time.monotonic() + seconds
    with UnixSender(unix, timeout=None) as s:
        while time.monotonic() < end:
            s.send(chunk)
            sent.value += 10 * CHUNK


class Readers:
    """Live-tail clients (some never read) and a /v1/stats poller, as threads of the soak process."""

    def __init__(self, url: str, tail_clients: int, never_read: int, stats_every: float):
        self.url = url
        self.stop = threading.Event()
        self.tail = [{"messages": 0, "bytes": 0, "dropped": 0, "close_code": None, "error": None} for _ in range(tail_clients - never_read)]
        self.silent: list[socket.socket] = []
        self.stats_latency: list[float] = []
        self.stats_errors: dict[str, int] = {}
        self.threads = [threading.Thread(target=self._read, args=(c,), daemon=True) for c in self.tail]
        if stats_every:
            self.threads.append(threading.Thread(target=self._poll_stats, args=(stats_every,), daemon=True))
        for _ in range(never_read):
            self.silent.append(self._silent_client())

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _read(self, c: dict) -> None:
        from websockets.sync.client import connect

        try:
            with connect(self.url.replace("http://", "ws://") + "/v1/tail", max_size=None, compression=None) as ws:
                while not self.stop.is_set():
                    try:
                        msg = ws.recv(timeout=1)
                    except TimeoutError:
                        continue
                    c["messages"] += 1
                    c["bytes"] += len(msg)
                    m = DROPPED.search(msg, len(msg) - 40)
                    c["dropped"] += int(m[1]) if m else 0
                c["close_code"] = "client closed"
        except Exception as exc:  # recorded: the report says which client failed and why
            c["error"] = f"{type(exc).__name__}: {exc}"[:200]

    def _silent_client(self) -> socket.socket:
        """Completes the WebSocket handshake, then never reads a byte (a stuck browser tab)."""
        host = urllib.parse.urlsplit(self.url)
        sock = socket.create_connection((host.hostname, host.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(
            b"GET /v1/tail HTTP/1.1\r\nHost: " + host.netloc.encode() + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"tail handshake refused: {head[:80]!r}")
        return sock

    def _poll_stats(self, every: float) -> None:
        host = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        while not self.stop.wait(every):
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/v1/stats")
                r = conn.getresponse()
                r.read()
                status = str(r.status)
            except Exception as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
            if status == "200":
                self.stats_latency.append(time.perf_counter() - t0)
            else:
                self.stats_errors[status] = self.stats_errors.get(status, 0) + 1
        conn.close()

    def finish(self) -> dict:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        for sock in self.silent:
            sock.close()
        return {
            "tail_readers": self.tail,
            "tail_never_read": len(self.silent),
            "stats_requests": len(self.stats_latency) + sum(self.stats_errors.values()),
            "stats_p99_s": round(p99(self.stats_latency), 4) if self.stats_latency else None,
            "stats_errors": self.stats_errors,
        }


class ReloadDriver:
    """Rewrites the config file and reloads it every `every` seconds, by POST /-/reload and SIGHUP
    in turn (a thread of the soak process). Every reload must apply RELOADED_KEYS and move the
    success timestamp with _successful at 1; anything else is a failed reload."""

    def __init__(self, proc, config_path: str, snapshot_path: str, snapshot_every: float, every: float):
        self.proc = proc
        self.config_path = config_path
        self.snapshot_path = snapshot_path
        self.snapshot_every = snapshot_every
        self.every = every
        self.stop = threading.Event()
        self.reloads: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def start(self) -> None:
        self.started = time.monotonic()
        if self.every:
            self.thread.start()

    def _run(self) -> None:
        generation = 0
        while not self.stop.wait(self.every):
            generation += 1
            self.reloads.append(self.reload_once(generation))

    def reload_once(self, generation: int) -> dict:
        via = "POST" if generation % 2 else "SIGHUP"
        record: dict = {"t": round(time.monotonic() - self.started, 1), "via": via, "ok": False, "error": None}
        t0 = time.perf_counter()
        try:
            before = scrape(self.proc.url)[1]["sidecar_config_last_reload_success_timestamp_seconds"]
            tmp = self.config_path + ".new"
            with open(tmp, "w") as f:
                f.write(soak_config(generation, self.snapshot_path, self.snapshot_every))
            os.replace(tmp, self.config_path)  # the sidecar reads the old file or the new one, whole
            if via == "POST":
                changed = self._post()
            else:
                changed = self._sighup()
            deadline = time.monotonic() + 30
            while True:  # SIGHUP answers nothing: the gauges say when it is done
                v = scrape(self.proc.url)[1]
                if v["sidecar_config_last_reload_success_timestamp_seconds"] > before or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            record["took_s"] = round(time.perf_counter() - t0, 3)
            record["changed"] = sorted(changed)
            if v["sidecar_config_last_reload_successful"] != 1:
                record["error"] = "sidecar_config_last_reload_successful is not 1"
            elif v["sidecar_config_last_reload_success_timestamp_seconds"] <= before:
                record["error"] = "the success timestamp did not move"
            elif changed != RELOADED_KEYS:
                record["error"] = f"applied {sorted(changed)}, expected {sorted(RELOADED_KEYS)}"
            else:
                record["ok"] = True
        except Exception as exc:  # recorded: a reload that raised is a failed reload
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return record

    def _post(self) -> set[str]:
        req = urllib.request.Request(self.proc.url + "/-/reload", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        if not answer.get("reloaded") or answer.get("needs_restart"):
            raise RuntimeError(f"/-/reload answered {answer}")
        return {c["key"] for c in answer["changed"]}

    def _sighup(self) -> set[str]:
        seen = sum("config reloaded (SIGHUP)" in line for line in self.proc.lines)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            logged = [line for line in self.proc.lines if "config reload" in line and "(SIGHUP)" in line]
            if len(logged) > seen:
                line = logged[seen]
                if "failed" in line or "needs a restart" in line:
                    raise RuntimeError(line.strip()[:300])
                return {key for key in RELOADED_KEYS if f"{key}:" in line}
            time.sleep(0.05)
        raise TimeoutError("no log line for the SIGHUP reload within 30 s")

    def finish(self) -> dict:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(120)
        ok = sum(r["ok"] for r in self.reloads)
        return {
            "every_s": self.every,
            "ok": ok,
            "failed": len(self.reloads) - ok,
            "by": {via: sum(r["via"] == via for r in self.reloads) for via in ("POST", "SIGHUP")},
            "took_max_s": max((r.get("took_s", 0) for r in self.reloads), default=None),
            "list": self.reloads,
        }


DROPPED = re.compile(r'"dropped":(\d+)\}$')


def scrape(url: str) -> tuple[float, dict[str, float], int]:
    """(seconds to fetch /metrics, {name: summed value} for the sidecar_/process_ families, series count)."""
    t0 = time.perf_counter()
    text = urllib.request.urlopen(url + "/metrics", timeout=SCRAPE_TIMEOUT).read().decode()
    took = time.perf_counter() - t0
    values: dict[str, float] = {}
    series = 0
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        series += 1
        if line.startswith(("sidecar_", "process_")):
            series_name, value = line.rsplit(" ", 1)
            name = re.split(r"[{ ]", line, 1)[0]
            values[name] = values.get(name, 0.0) + float(value)
            if series_name != name:
                values[series_name] = float(value)  # labelled: also on its own, e.g. writes_total{result="ok"}
    return took, values, series


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 2 else (xs[0] if xs else 0.0)


def run(
    duration: float, rate: float | None, fraction: float, churn: float, warmup: float,
    tail_clients: int = 10, never_read: int = 3, stats_every: float = 0.1,
    reload_every: float = 60.0, snapshot_every: float = 30.0,
) -> dict:
    ctx = multiprocessing.get_context("spawn")
    ceiling = ceiling_limit() if rate is None else None  # the max rate is reported beside it
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        snapshot_path = os.path.join(tmp, "windows.npz") if snapshot_every else ""
        # The window store keeps every event of the largest window (memory ~ rate x window), so
        # the soak uses windows short enough to reach their steady state within the warm-up.
        config = soak_config(0, snapshot_path, snapshot_every)
        proc = start_sidecar(tmp, config=config)
        report: dict = {
            "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "duration_s": duration,
            "loadavg_start": os.getloadavg(), "snapshot_every_s": snapshot_every,
        }
        reloader = ReloadDriver(proc, os.path.join(tmp, "config.yaml"), snapshot_path, snapshot_every, reload_every)
        samples: list[dict] = []
        snapshots: list[dict] = []
        scrape_errors: list[dict] = []
        report["scrape_errors"] = scrape_errors
        try:
            _, v0, _ = scrape(proc.url)
            report["start"] = {"fds": fds(proc.pid), "tasks": v0.get("sidecar_asyncio_tasks"), "rss_mib": rss_mib(proc.pid)}
            blasted = 0
            if rate is None:
                sent = ctx.Value("q", 0)
                before = scrape(proc.url)[1].get("sidecar_events_processed_total", 0)
                t0 = time.monotonic()
                b = ctx.Process(target=blast, args=(proc.unix, 5.0, sent))
                b.start()
                b.join()
                while scrape(proc.url)[1].get("sidecar_events_processed_total", 0) < before + sent.value:
                    time.sleep(0.05)
                max_rate = sent.value / (time.monotonic() - t0)
                blasted = sent.value
                rate = max_rate * fraction
                report["max_rate"] = round(max_rate)
                report["ceiling"] = round(ceiling)
            report["rate"] = round(rate)
            stop = ctx.Event()
            sent_unix, sent_http = ctx.Value("q", 0), ctx.Value("q", 0)
            gen = ctx.Process(target=load, args=(proc.unix, proc.url, rate, churn, stop, sent_unix, sent_http))
            readers = Readers(proc.url, tail_clients, never_read, stats_every)
            readers.start()
            started = time.monotonic()
            gen.start()
            reloader.start()
            saves = 0.0
            while (elapsed := time.monotonic() - started) < duration:
                try:
                    took, v, series = scrape(proc.url)
                except OSError as exc:  # a stalled or dead sidecar: say what it was doing, go on
                    scrape_errors.append({"t": round(elapsed, 1), "error": f"{type(exc).__name__}: {exc}"[:200], "stack": py_spy_dump(proc.pid)})
                    continue
                samples.append(
                    {
                        "t": round(elapsed, 1),
                        "scrape_s": round(took, 4),
                        "series": series,
                        "rss_mib": round(rss_mib(proc.pid), 1),
                        "fds": fds(proc.pid),
                        "tasks": v.get("sidecar_asyncio_tasks"),
                        "processed": v.get("sidecar_events_processed_total"),
                        "queue": v.get("sidecar_pipeline_queue_batches"),
                        "load1": os.getloadavg()[0],
                    }
                )
                written = v.get('sidecar_window_snapshot_writes_total{result="ok"}', 0.0)
                if written > saves:  # a save finished since the last sample: its gauges are its own
                    snapshots.append(snapshot_record(elapsed, v, int(written - saves)))
                    saves = written
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started - elapsed)))
            stop.set()
            gen.join(60)
            report["reloads"] = reloader.finish()
            report["readers"] = readers.finish()
            sent_total = blasted + sent_unix.value + sent_http.value

            def settled() -> dict[str, float]:
                try:
                    v = scrape(proc.url)[1]
                except OSError as exc:
                    scrape_errors.append({"t": round(time.monotonic() - started, 1), "error": f"{type(exc).__name__}: {exc}"[:200], "stack": py_spy_dump(proc.pid)})
                    return {}
                done = v.get("sidecar_events_received_total", 0) >= sent_total
                return v if done and v.get("sidecar_events_processed_total") == v.get("sidecar_events_accepted_total") else {}

            deadline = time.monotonic() + 60
            while not (final := settled()) and time.monotonic() < deadline:
                time.sleep(0.2)
            final = final or scrape(proc.url)[1]
            time.sleep(2)  # let idle connections and their tasks go
            idle = [scrape(proc.url) for _ in range(20)]  # the same series, without the load
            report["scrape_idle_p99_s"] = round(p99([took for took, _, _ in idle]), 4)
            report["scrape_idle_series"] = idle[-1][2]
            _, v_end, _ = scrape(proc.url)
            report["end"] = {"fds": fds(proc.pid), "tasks": v_end.get("sidecar_asyncio_tasks"), "rss_mib": rss_mib(proc.pid)}
            report["sent"] = sent_total
            report["counters"] = {k.removeprefix("sidecar_events_").removesuffix("_total"): final.get(k, 0) for k in (
                "sidecar_events_received_total", "sidecar_events_accepted_total", "sidecar_events_rejected_total",
                "sidecar_events_dropped_total", "sidecar_events_processed_total")}
            report["stats_cumulative_events"] = stats_events(proc.url)
            report["snapshot_writes"] = {r: v_end.get(f'sidecar_window_snapshot_writes_total{{result="{r}"}}', 0) for r in ("ok", "error")}
        finally:
            reloader.stop.set()
            stopped_at = time.time()
            proc.send_signal(signal.SIGTERM)
            report["exit_code"] = proc.wait(30)  # returns once every line it logged is in proc.lines
        report["final_line"] = next((line.strip() for line in proc.lines if "stopped:" in line), "")
        report["sidecar_log"] = [line.rstrip() for line in proc.lines if " WARNING " in line or " ERROR " in line or "Traceback" in line][:50]
        report["samples"] = samples
        report["snapshots"] = snapshots
        report["loadavg_end"] = os.getloadavg()
        if snapshot_path:
            report["restart"] = restart_on_snapshot(tmp, snapshot_path, stopped_at, soak_config(0, snapshot_path, snapshot_every))
    return summarise(report, warmup)


def py_spy_dump(pid: int) -> str:
    """Every thread's stack in `pid` now (py-spy, when installed), for a report on a stall."""
    try:
        return subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout[-4000:]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no py-spy dump: {exc}"


def snapshot_record(elapsed: float, v: dict[str, float], saves: int) -> dict:
    """One periodic save as the sidecar's gauges describe it (the last one, if `saves` > 1)."""
    return {
        "t": round(elapsed, 1),
        "saves": saves,
        "bytes": v.get("sidecar_window_snapshot_bytes"),
        "duration_s": v.get("sidecar_window_snapshot_last_duration_seconds"),
        "pause_s": v.get("sidecar_window_snapshot_last_pause_seconds"),
    }


def stats_events(url: str) -> int:
    with urllib.request.urlopen(url + "/v1/stats", timeout=30) as r:
        return int(json.loads(r.read())["cumulative"]["events"])


def restart_on_snapshot(tmp: str, path: str, stopped_at: float, config: str) -> dict:
    """The file the SIGTERM wrote, restored by a new sidecar: how fresh, how big, what it answers."""
    out: dict = {"exists": os.path.exists(path)}
    if not out["exists"]:
        return out
    out["age_at_stop_s"] = round(stopped_at - os.path.getmtime(path), 2)  # negative: written after the SIGTERM
    out["bytes"] = os.path.getsize(path)
    t0 = time.perf_counter()
    proc = start_sidecar(tmp, config=config)
    try:
        out["ready_s"] = round(time.perf_counter() - t0, 2)
        v = scrape(proc.url)[1]
        out["restored"] = v.get('sidecar_window_snapshot_loads_total{result="restored"}', 0)
        out["cumulative_events"] = stats_events(proc.url)
    finally:
        proc.send_signal(signal.SIGTERM)
        out["exit_code"] = proc.wait(30)
    out["log"] = [line.strip() for line in proc.lines if "window snapshot" in line][:3]
    return out


def summarise(report: dict, warmup: float) -> dict:
    samples = report["samples"]
    steady = [s for s in samples if s["t"] >= warmup] or samples
    rss = [s["rss_mib"] for s in steady]
    report["warmup_s"] = warmup
    report["rss_after_warmup"] = {"first": rss[0], "min": min(rss), "max": max(rss), "last": rss[-1]}
    report["rss_drift_pct"] = round(100 * (max(rss) - min(rss)) / min(rss), 1)
    report["series_max"] = max(s["series"] for s in samples)
    if len(samples) > 1 and samples[-1]["t"] > samples[0]["t"]:
        report["achieved_rate"] = round((samples[-1]["processed"] - samples[0]["processed"]) / (samples[-1]["t"] - samples[0]["t"]))
    report["scrape_p99_s"] = round(p99([s["scrape_s"] for s in samples]), 4)
    big = [s["scrape_s"] for s in samples if s["series"] >= 10_000]
    report["scrape_p99_at_10k_series_s"] = round(p99(big), 4) if big else None
    report["scrapes_at_10k_series"] = len(big)
    c = report["counters"]
    violations = []
    if not (report["sent"] == c["received"] == c["accepted"] + c["rejected"] + c["dropped"]):
        violations.append(f"conservation: sent {report['sent']}, {c}")
    if c["processed"] != c["accepted"]:
        violations.append(f"backlog not drained: {c}")
    if report["end"]["fds"] > report["start"]["fds"] + 2:
        violations.append(f"fd leak: {report['start']['fds']} -> {report['end']['fds']}")
    if (report["end"]["tasks"] or 0) > (report["start"]["tasks"] or 0) + 2:
        violations.append(f"task leak: {report['start']['tasks']} -> {report['end']['tasks']}")
    bound = 40 * SERIES_CAP  # every agent_* family capped; sidecar_/process_ series are a few dozen
    if report["series_max"] > bound:
        violations.append(f"series unbounded: {report['series_max']} > {bound}")
    failed_readers = [c["error"] for c in report["readers"]["tail_readers"] if c["error"]]
    if failed_readers:
        violations.append(f"tail clients failed: {failed_readers}")
    if report["scrape_errors"]:
        violations.append(f"{len(report['scrape_errors'])} scrapes failed: {[e['error'] for e in report['scrape_errors'][:3]]}")
    if report["readers"]["stats_errors"]:
        violations.append(f"/v1/stats failures: {report['readers']['stats_errors']}")
    if report["exit_code"] != 0 or "stopped:" not in report["final_line"]:
        violations.append(f"shutdown: exit {report['exit_code']}, final line {report['final_line']!r}")
    if report["stats_cumulative_events"] != c["processed"]:
        violations.append(f"/v1/stats cumulative.events {report['stats_cumulative_events']} != processed {c['processed']:.0f}")
    reloads = report["reloads"]
    if reloads["failed"]:
        violations.append(f"{reloads['failed']} failed reloads: {[r['error'] for r in reloads['list'] if not r['ok']][:3]}")
    # Each reload waits until the gauges moved, i.e. for a scrape, which a loaded machine can make take
    # seconds: a driver that fell behind by half its schedule is the violation, not one late reload.
    if reloads["every_s"] and len(reloads["list"]) < int(report["duration_s"] // reloads["every_s"]) // 2:
        violations.append(f"only {len(reloads['list'])} reloads in {report['duration_s']:g} s")
    violations += snapshot_violations(report)
    report["violations"] = violations
    report["rss_trend"] = trend(samples, report["duration_s"])
    report["fds_max"] = max(s["fds"] for s in samples)
    report["tasks_max"] = max(s["tasks"] or 0 for s in samples)
    return report


def snapshot_violations(report: dict) -> list[str]:
    every = report["snapshot_every_s"]
    if not every:
        return []
    out = []
    writes, snaps = report["snapshot_writes"], report["snapshots"]
    if writes["error"]:
        out.append(f"{writes['error']:.0f} window snapshots failed")
    if writes["ok"] < int(report["duration_s"] // every) - 1:
        out.append(f"only {writes['ok']:.0f} window snapshots in {report['duration_s']:g} s (every {every:g} s)")
    if any(s["duration_s"] is None or s["pause_s"] is None for s in snaps):
        out.append("a snapshot without its duration and pause gauges")
    r = report["restart"]
    if not r["exists"]:
        out.append("no snapshot file after the SIGTERM")
    elif r["age_at_stop_s"] > 0:
        out.append(f"the snapshot file was not written at the SIGTERM (written {r['age_at_stop_s']} s before it)")
    elif r["restored"] != 1 or r["cumulative_events"] != report["stats_cumulative_events"] or r["exit_code"] != 0:
        out.append(f"restart on the snapshot: {r}")
    return out


def trend(samples: list[dict], duration: float) -> list[dict]:
    """RSS (and fds, tasks, series) at the start and at each third of the run (e.g. 0/10/20/30 min)."""
    marks = [0.0, duration / 3, 2 * duration / 3, duration]
    out = []
    for m in marks:
        s = min(samples, key=lambda x: abs(x["t"] - m))
        out.append({k: s[k] for k in ("t", "rss_mib", "fds", "tasks", "series", "load1")})
    return out


def tail_summary(readers: dict) -> str:
    tail = readers["tail_readers"]
    if not tail and not readers["tail_never_read"]:
        return "none"
    msgs = sum(c["messages"] for c in tail)
    mib = sum(c["bytes"] for c in tail) / 2**20
    dropped = sum(c["dropped"] for c in tail)
    errors = [c["error"] for c in tail if c["error"]]
    return (f"{len(tail)} reading clients got {msgs:,} messages ({mib:,.0f} MiB), told of {dropped:,} dropped events; "
            f"{readers['tail_never_read']} never read" + (f"; errors: {errors}" if errors else ""))


def reload_summary(reloads: dict) -> str:
    if not reloads["every_s"]:
        return "off"
    return (f"every {reloads['every_s']:g} s: {reloads['ok']} ok, {reloads['failed']} failed "
            f"({reloads['by']['POST']} POST /-/reload, {reloads['by']['SIGHUP']} SIGHUP; each changed "
            f"{', '.join(sorted(RELOADED_KEYS))}); slowest {1000 * (reloads['took_max_s'] or 0):.0f} ms until the gauges moved")


def snapshot_summary(r: dict) -> str:
    if not r["snapshot_every_s"]:
        return "off"
    snaps = r["snapshots"]
    durations = [1000 * s["duration_s"] for s in snaps if s["duration_s"] is not None]
    pauses = [1000 * s["pause_s"] for s in snaps if s["pause_s"] is not None]
    sizes = [s["bytes"] / 1e6 for s in snaps if s["bytes"]]
    text = f"every {r['snapshot_every_s']:g} s: {r['snapshot_writes']['ok']:.0f} written, {r['snapshot_writes']['error']:.0f} failed"
    if durations:
        text += (f"; each took p50 {statistics.median(durations):.0f} ms, max {max(durations):.0f} ms; longest event-loop pause "
                 f"p50 {statistics.median(pauses):.1f} ms, max {max(pauses):.1f} ms; file {min(sizes):.1f}-{max(sizes):.1f} MB")
    rs = r["restart"]
    if rs.get("exists"):
        text += (f". After the SIGTERM: file written {-rs['age_at_stop_s']:.1f} s after it, {rs['bytes'] / 1e6:.1f} MB; a new sidecar "
                 f"restored it (ready in {rs['ready_s']:.1f} s, cumulative.events {rs['cumulative_events']:,})")
    else:
        text += ". No file after the SIGTERM"
    return text


def markdown(r: dict) -> str:
    s, e = r["start"], r["end"]
    rows = [
        ("machine / date", f"{r['machine']} / {r['date']}"),
        ("duration", f"{r['duration_s'] / 60:g} min, {len(r['samples'])} scrapes (1/s)"),
        ("load", f"{r['rate']:,} events/s" + (f" = {r['rate'] / r['max_rate']:.2f} x the measured max {r['max_rate']:,}/s ({r['max_rate'] / r['ceiling']:.2f} x ceiling.py limit {r['ceiling']:,}/s)" if "max_rate" in r else "") + f"; processed {r.get('achieved_rate', 0):,}/s on average; 90% Unix, 10% HTTP; new agent/workflow names every churn period"),
        (f"RSS after {r['warmup_s'] / 60:g} min warm-up", f"{r['rss_after_warmup']['min']}-{r['rss_after_warmup']['max']} MiB (drift {r['rss_drift_pct']}%), start {s['rss_mib']:.1f}, end {e['rss_mib']:.1f}"),
        ("series exposed (max)", f"{r['series_max']:,} (cap {SERIES_CAP:,}/metric, ttl {SERIES_TTL}; windows {', '.join(WINDOWS)})"),
        ("open fds start/end", f"{s['fds']} / {e['fds']}"),
        ("asyncio tasks start/end", f"{s['tasks']:.0f} / {e['tasks']:.0f}"),
        ("scrape p99 under load", f"{r['scrape_p99_s'] * 1000:.1f} ms overall; at >= 10k series: " + (f"{r['scrape_p99_at_10k_series_s'] * 1000:.1f} ms ({r['scrapes_at_10k_series']} scrapes)" if r["scrape_p99_at_10k_series_s"] is not None else "n/a")),
        ("scrape p99 without load", f"{r['scrape_idle_p99_s'] * 1000:.1f} ms at {r['scrape_idle_series']:,} series (20 scrapes after the load stopped)"),
        ("conservation", f"sent {r['sent']:,}; " + ", ".join(f"{k} {v:,.0f}" for k, v in r["counters"].items())),
        ("shutdown", f"exit {r['exit_code']}; {r['final_line'].split('stopped: ')[-1]}"),
        ("live tail", tail_summary(r["readers"])),
        ("/v1/stats every 100 ms", f"{r['readers']['stats_requests']:,} requests, p99 " + (f"{r['readers']['stats_p99_s'] * 1000:.1f} ms" if r["readers"]["stats_p99_s"] is not None else "n/a") + f", failures {r['readers']['stats_errors'] or 'none'}"),
        ("RSS / fds / tasks / series over the run", "; ".join(f"{t['t'] / 60:.1f} min: {t['rss_mib']:.0f} MiB, {t['fds']} fds, {t['tasks']:.0f} tasks, {t['series']:,} series" for t in r["rss_trend"]) + f" (max {r['fds_max']} fds, {r['tasks_max']:.0f} tasks)"),
        ("load average (1/5/15 min) start / end", f"{' '.join(f'{x:.2f}' for x in r['loadavg_start'])} / {' '.join(f'{x:.2f}' for x in r['loadavg_end'])}"),
        ("config reloads", reload_summary(r["reloads"])),
        ("window snapshots", snapshot_summary(r)),
        ("/v1/stats cumulative.events at the end", f"{r['stats_cumulative_events']:,} (= processed: {r['stats_cumulative_events'] == r['counters']['processed']})"),
        ("violations", "; ".join(r["violations"]) or "none"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def every(text: str) -> float:
    """A duration, or 0 for 'off', '0' or '0s'."""
    return 0.0 if text.strip() in ("off", "0", "0s") else parse_duration(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", default="30m", help="how long to load (e.g. 60s, 10m)")
    ap.add_argument("--rate", type=float, help="events/s (default: --fraction of the measured maximum)")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--churn", default="60s", help="new agent and workflow names this often")
    ap.add_argument("--tail-clients", type=int, default=10, help="live-tail WebSocket clients (0 for none)")
    ap.add_argument("--never-read", type=int, default=3, help="how many of them never read")
    ap.add_argument("--stats-every", default="100ms", help="poll /v1/stats this often ('0s' is not allowed; use --no-stats)")
    ap.add_argument("--no-stats", action="store_true", help="do not poll /v1/stats")
    ap.add_argument("--warmup", default=None, help="ignored for RSS drift (default: the longest window plus a minute, at most half the run)")
    ap.add_argument("--reload-every", default="60s", help="rewrite the config and reload it this often ('off': never)")
    ap.add_argument("--snapshot-every", default="30s", help="windows.snapshot_every ('off': no snapshot file)")
    ap.add_argument("--json", metavar="PATH", help="write the whole report, every sample included")
    args = ap.parse_args()
    duration = parse_duration(args.duration)
    warmup = parse_duration(args.warmup) if args.warmup else min(duration / 2, max(parse_duration(w) for w in WINDOWS) + 60)
    stats_every = 0.0 if args.no_stats else parse_duration(args.stats_every)
    report = run(
        duration, args.rate, args.fraction, parse_duration(args.churn), warmup, args.tail_clients, args.never_read, stats_every,
        every(args.reload_every), every(args.snapshot_every),
    )
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
