"""Shared pieces of the live-tail benchmarks: a real sidecar process, its metrics, the ceiling probe."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import common
from common import REPO, ceiling_limit, cpu_seconds, machine, rss_mib, scrape_value, send_ndjson  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from sidecar.testing import SidecarProcess


def start_sidecar(tmpdir: str, config: str = "") -> SidecarProcess:
    """A real `agent-sidecar run` of this checkout, ready (see common.start_sidecar), with `config` YAML.
    PROFILE=out.prof runs it under cProfile (written at its graceful exit); UVLOOP=1 on uvloop."""
    profile = ["-m", "cProfile", "-o", os.environ["PROFILE"]] if os.environ.get("PROFILE") else []
    entry = ["-c", "import sys, uvloop; uvloop.install(); from sidecar.cli import main; sys.exit(main())"] if os.environ.get("UVLOOP") else ["-m", "sidecar"]
    return common.start_sidecar(tmpdir, config=config or "{}\n", command=[sys.executable, *profile, *entry])


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
