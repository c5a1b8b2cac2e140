"""Shared pieces of the live-tail benchmarks: a real sidecar process, its metrics, the ceiling probe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from common import REPO, ceiling_limit, cpu_seconds, machine, rss_mib, scrape_value  # noqa: F401 (re-exported)


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
