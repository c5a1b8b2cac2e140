"""Helpers that tests (and users testing their own integrations) reuse.

`running_sidecar()` runs a real sidecar (real uvicorn, real sockets) on an
ephemeral port and a temporary Unix socket, in a background thread, and exposes
its registry and internals for exact assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from sidecar.app import Sidecar
from sidecar.client.senders import send_unix
from sidecar.config import Config
from sidecar.server import build_server, loop_factory, url_of


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: float = 1_790_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    """Poll `predicate` until it is true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def event(type: str = "llm.call", **fields: Any) -> dict[str, Any]:
    """An event dict with sensible defaults for tests."""
    return {"type": type, **fields}


def ndjson(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


@dataclass
class RunningSidecar:
    config: Config
    url: str
    unix: str
    registry: CollectorRegistry
    sidecar: Sidecar
    loop: asyncio.AbstractEventLoop

    _resumed: asyncio.Task[None] | None = field(default=None, init=False)

    def send_unix(self, data: bytes) -> None:
        """Write bytes to the ingest socket and wait until the sidecar has read them all."""
        send_unix(self.unix, data)

    def stall_pipeline(self) -> None:
        """Stop the pipeline task: its queue fills, Unix clients wait, HTTP answers 503 (queue_full)."""

        async def stall() -> None:
            for task in asyncio.all_tasks():
                if task.get_name() == "pipeline":
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stall(), self.loop).result(10)

    def resume_pipeline(self) -> None:
        """Run the pipeline again after `stall_pipeline`; `running_sidecar` drains it at exit."""

        async def resume() -> None:
            self._resumed = asyncio.create_task(self.sidecar.pipeline.run())

        asyncio.run_coroutine_threadsafe(resume(), self.loop).result(10)

    def _drain_resumed(self) -> None:
        task = self._resumed
        if task is None:
            return

        async def drain() -> None:  # the lifespan only drains the task it started itself
            await self.sidecar.pipeline.close()
            await task

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(10)

    def wait_processed(self, n: int, timeout: float = 10.0) -> None:
        """Block until the pipeline is done with at least `n` events in total: processed by every
        sink, or dropped by one (`sidecar_sink_events_dropped_total`), so a test never waits for an
        event a sink refused."""
        pipeline = self.sidecar.pipeline
        deadline = time.monotonic() + timeout
        while pipeline.processed + pipeline.sink_dropped < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"processed {pipeline.processed} (and {pipeline.sink_dropped} dropped by a sink) of {n} events")
            time.sleep(0.005)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the sidecar's event loop (between batches) and return its result."""

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)


@contextlib.contextmanager
def running_sidecar(
    config: Config | None = None, *, clock: Callable[[], float] = time.time, **changes: Any
) -> Iterator[RunningSidecar]:
    """Run a sidecar in a thread; `changes` are dotted config keys, e.g. **{"auth.token": "s"}."""
    with tempfile.TemporaryDirectory(prefix="sidecar-") as tmp:
        base = (config or Config()).replace(**{"listen.http": "127.0.0.1:0", "listen.unix": os.path.join(tmp, "ingest.sock")})
        config = base.replace(**changes) if changes else base
        registry = CollectorRegistry()
        server, sock = build_server(config, registry=registry, clock=clock)
        # Say what server.loop_factory returns (it may be untyped) rather than silence the check.
        factory: Callable[[], Callable[[], asyncio.AbstractEventLoop] | None] = loop_factory
        loop = (factory() or asyncio.new_event_loop)()
        thread = threading.Thread(
            target=loop.run_until_complete, args=(server.serve(sockets=[sock] if sock else []),), daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("sidecar did not start")
            time.sleep(0.01)
        app = server.config.loaded_app
        while hasattr(app, "app"):  # unwrap uvicorn's middleware
            app = app.app
        running = RunningSidecar(config, url_of(sock) if sock else "", config.listen.unix, registry, app.state.sidecar, loop)
        try:
            yield running
        finally:
            running._drain_resumed()
            server.should_exit = True
            thread.join(config.shutdown_grace + 5)
            loop.close()
            if sock:
                sock.close()


def final_totals(output: str) -> dict[str, int]:
    """The counts of the `stopped: received=N accepted=N ...` line a sidecar logs on exit."""
    found = re.search(r"stopped: (.*)", output)
    if found is None:
        raise ValueError("no `stopped:` line in the sidecar's output")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[1])}


SIDECAR_COMMAND = (sys.executable, "-m", "sidecar")


class SidecarProcess:
    """A real `agent-sidecar run` process, talked to only from outside; the one way tests and
    benchmarks start one. Returns once it has logged "ready" (then `url` and `unix` say where).

    `args` go after `run`; `env` is added to this process's environment; `command` replaces
    `python -m sidecar` (e.g. to run it under cProfile). Its output is read by a thread (a pipe
    nobody reads would fill up and stall the sidecar) and kept in `lines`. It also answers the
    `subprocess.Popen` calls benchmarks make (`pid`, `poll`, `wait`, `send_signal`, `terminate`, `kill`).
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        command: Sequence[str] = SIDECAR_COMMAND,
        ready_timeout: float = 30.0,
    ):
        self.proc = subprocess.Popen(
            [*command, "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.url = ""
        self.unix = ""
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout) or not (self.url or self.unix):
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            raise RuntimeError(f"sidecar did not become ready within {ready_timeout:g}s:\n" + self.output)

    @classmethod
    def in_dir(
        cls, tmpdir: str, *args: str, config: str | None = None, env: dict[str, str] | None = None, command: Sequence[str] = SIDECAR_COMMAND
    ) -> SidecarProcess:
        """On an ephemeral port and `tmpdir`/s.sock, with `config` (YAML text) written to `tmpdir`/config.yaml."""
        argv = ["--http", "127.0.0.1:0", "--unix", os.path.join(tmpdir, "s.sock"), *args]
        if config is not None:
            path = os.path.join(tmpdir, "config.yaml")
            with open(path, "w") as f:
                f.write(config)
            argv += ["--config", path]
        return cls(argv, env, command=command)

    def _drain(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        for raw in stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if not self._ready.is_set() and " ready " in line:
                for word in line.split():
                    if word.startswith("http="):
                        self.url = word[5:]
                    elif word.startswith("unix="):
                        self.unix = word[5:]
                self._ready.set()
        stdout.close()
        self._ready.set()  # it exited before it was ready: __init__ stops waiting

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def logged(self, text: str, timeout: float = 15.0) -> str:
        """The first line containing `text`, waited for: the reader thread may not have read a line
        the process wrote before answering an HTTP request."""
        wait_until(lambda: any(text in line for line in self.lines), f"a log line with {text!r}", timeout)
        return next(line for line in self.lines if text in line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)  # every line it wrote is in `lines`
        return rc

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()

    def stop(self, sig: int | None = None, timeout: float = 20) -> int:
        """Signal the process (SIGTERM by default) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        return self.wait(timeout)
