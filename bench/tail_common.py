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
    PROFILE=out.prof runs it under cProfile (written at its graceful exit); UVLOOP=1 on uvloop;
    TAIL_PROBE=ages.bin with the write probe of bench/tail_probe.py."""
    profile = ["-m", "cProfile", "-o", os.environ["PROFILE"]] if os.environ.get("PROFILE") else []
    entry = ["-c", "import sys, uvloop; uvloop.install(); from sidecar.cli import main; sys.exit(main())"] if os.environ.get("UVLOOP") else ["-m", "sidecar"]
    if os.environ.get("TAIL_PROBE"):
        entry = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "tail_probe.py")]
    return common.start_sidecar(tmpdir, config=config or "{}\n", command=[sys.executable, *profile, *entry])


def serve_raw_clients(url: str, queries: list[str], on_message, ready, stop) -> None:
    """`serve_clients` with a minimal client instead of the websockets library: a real HTTP
    upgrade, then frames parsed by hand in `data_received` (server frames are unmasked; pings
    get a pong). It costs the client process a fraction of what the library does per message,
    so on this 2-core box more of the CPU is left to the sidecar; `on_message` gets bytes."""
    import asyncio
    import base64
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    class Client(asyncio.Protocol):
        def __init__(self, up: asyncio.Future[None]) -> None:
            self.buf = bytearray()
            self.open = False
            self.up = up
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            if not self.open:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                if not buf.startswith(b"HTTP/1.1 101"):
                    self.up.set_exception(RuntimeError(bytes(buf[:end]).decode()))
                    return
                del buf[: end + 4]
                self.open = True
                self.up.set_result(None)
            while len(buf) >= 2:
                opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
                start = 2
                if n == 126:
                    if len(buf) < 4:
                        return
                    n, start = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    if len(buf) < 10:
                        return
                    n, start = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) < start + n:
                    return
                payload = bytes(buf[start : start + n])
                del buf[: start + n]
                if opcode == 0x1:
                    on_message(payload)
                elif opcode == 0x9 and self.transport is not None:  # ping: a masked pong (zero key)
                    self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    async def one(query: str) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        up: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Client(up), host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{query}" if query else "")
        transport.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await asyncio.wait_for(up, 60)
        return transport

    async def main() -> None:
        transports = [await one(q) for q in queries]
        ready.put(len(queries))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for t in transports:
            t.close()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


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
