"""Shared pieces of the live-tail benchmarks: a real sidecar process, its metrics, the ceiling probe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CEILING = os.environ.get("CEILING", "/work/shared/bench/ceiling.py")


def start_sidecar(tmpdir: str, config: str = "") -> subprocess.Popen:
    """A real `agent-sidecar run` of this checkout; returns the process with `.url` and `.unix` set.
    Its log goes to a file (a pipe nobody reads would fill up and stall it)."""
    path = os.path.join(tmpdir, "config.yaml")
    with open(path, "w") as f:
        f.write(config or "{}\n")
    log = open(os.path.join(tmpdir, "sidecar.log"), "w+b")
    # PROFILE=out.prof runs the sidecar under cProfile (written at its graceful exit).
    profile = ["-m", "cProfile", "-o", os.environ["PROFILE"]] if os.environ.get("PROFILE") else []
    # UVLOOP=1 runs it on uvloop (what main's sidecar is moving to), for comparison.
    entry = ["-c", "import sys, uvloop; uvloop.install(); from sidecar.cli import main; sys.exit(main())"] if os.environ.get("UVLOOP") else ["-m", "sidecar"]
    args = [sys.executable, *profile, *entry, "run", "--http", "127.0.0.1:0", "--unix", os.path.join(tmpdir, "s.sock"), "--config", path]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": REPO})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log.name, "rb") as f:
            m = re.search(rb" ready http=(\S+) unix=(\S+)", f.read())
        if m:
            proc.url, proc.unix = m[1].decode(), m[2].decode()
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sidecar did not start:\n" + open(log.name).read())


def scrape_value(url: str, name: str) -> float:
    """Sum of every sample called `name` in the sidecar's /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    return sum(float(m[1]) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def ceiling_limit() -> float:
    """events/s of `ceiling.py limit` on this machine, now."""
    out = subprocess.run([sys.executable, CEILING, "limit"], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"= ([\d,]+) events/s", out)[1].replace(",", ""))


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs, {model}, Python {sys.version.split()[0]}"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def serve_clients(url: str, queries: list[str], on_message, ready, stop) -> None:
    """In this process: connect one websockets client per query (one at a time, each waiting
    for the previous handshake), report `ready`, call `on_message(text)` for every message
    until `stop` is set."""
    import asyncio

    from websockets.asyncio.client import connect

    async def one(query: str, up: asyncio.Queue) -> None:
        async with connect(f"{url}?{query}" if query else url, compression=None, max_size=None, open_timeout=60) as ws:
            await up.put(None)
            async for data in ws:
                on_message(data)

    async def main() -> None:
        up: asyncio.Queue = asyncio.Queue()
        tasks = []
        for q in queries:
            tasks.append(asyncio.create_task(one(q, up)))
            await up.get()
        ready.put(len(queries))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:  # the clients are the measuring instrument: make them as cheap as this box allows
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
