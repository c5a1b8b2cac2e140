"""Shared pieces of the benchmarks: a realistic event mix, a sidecar process, sending to it, the ceiling probe.

The sidecar process and the senders are the ones in `sidecar.testing` and `sidecar.client`, imported
lazily so a benchmark's client processes pay for no server import they do not use."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecar.testing import SidecarProcess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CEILING = os.environ.get("CEILING", os.path.join(REPO, "..", "shared", "bench", "ceiling.py"))

AGENTS = [f"agent-{i:02d}" for i in range(20)]
WORKFLOWS = ["code_review", "research", "triage", "support", "planning"]
MODELS = ["gpt-4o", "claude-sonnet", "llama-3-70b"]
TYPES = ["llm.call", "tool.call", "agent.invoked", "agent.completed", "agent.failed", "workflow.started", "workflow.completed", "workflow.failed"]


def realistic_lines(n: int, seed: int = 1, payload: bool = False) -> list[bytes]:
    """n NDJSON lines over 20 agents x 5 workflows x 3 models x 8 types, ~290 bytes each. With
    `payload`, each also carries a small payload with a list in it, as agent frameworks send
    (tool arguments, message parts): ~360 bytes."""
    rnd = random.Random(seed)
    now = time.time()
    lines = []
    for i in range(n):
        t = rnd.choice(TYPES)
        ev = {
            "type": t,
            "timestamp": now,
            "agent": rnd.choice(AGENTS),
            "workflow": rnd.choice(WORKFLOWS),
            "model": rnd.choice(MODELS),
            "run_id": f"run-{i // 40}",
            "invocation_id": f"inv-{i // 4}",
            "trace_id": f"{rnd.getrandbits(128):032x}",
            "duration_ms": round(rnd.lognormvariate(6, 1.2), 2),
            "input_tokens": rnd.randrange(50, 4000),
            "output_tokens": rnd.randrange(10, 1500),
            "cost_usd": round(rnd.random() / 50, 6),
        }
        if t.endswith(".failed"):
            ev["error"] = rnd.choice(["timeout", "rate_limited", "tool_error"])
        if payload:
            ev["payload"] = {"step": i % 7, "tags": rnd.sample(["retry", "cached", "stream", "tool"], 2), "args": {"query": f"q{i % 97}"}}
        lines.append(json.dumps(ev, separators=(",", ":")).encode() + b"\n")
    return lines


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


def start_sidecar(tmpdir: str, *extra: str, config: str | None = None, command: Sequence[str] | None = None) -> SidecarProcess:
    """A real `agent-sidecar run` of this checkout, ready; `.url`, `.unix`, `.pid`, `.wait()`, ...
    (see sidecar.testing.SidecarProcess). `command` replaces `python -m sidecar`."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from sidecar.testing import SIDECAR_COMMAND, SidecarProcess

    return SidecarProcess.in_dir(tmpdir, *extra, config=config, env=child_env(), command=command or SIDECAR_COMMAND)


def child_env(repo: str = REPO) -> dict[str, str]:
    """The environment entries that make a child process import `repo`'s `sidecar`. PYTHONSAFEPATH:
    `python -m sidecar` would otherwise put the current directory first, and a bench run from inside
    one checkout ran that checkout whatever REPO named (BENCHMARKS.md, 2026-12-02 08:30-09:55)."""
    return {"PYTHONPATH": repo, "PYTHONSAFEPATH": "1"}


def send_ndjson(path: str, data: bytes | Iterable[bytes]) -> int:
    """Send NDJSON bytes over one connection to the sidecar's socket and wait until it has read
    them all (sidecar.client.send_unix); returns the bytes sent."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from sidecar.client.senders import send_unix

    return send_unix(path, data, timeout=None)


def scrape_value(url: str, name: str) -> float:
    """Sum of every sample called `name` in the sidecar's /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    return sum(float(m[1]) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def timed_load(pid: int, url: str, counter: str, total: float, client: Callable[..., None], *args: object) -> tuple[float, float]:
    """Run `client(*args, loaded, ready)` in its own process, timed from when it has prepared its
    load (it sets `loaded`, then waits for `ready`) until the server at `url` counts `total` in
    `counter`: (seconds, CPU seconds of `pid`). No scrapes while the client sends: at 20 Hz they
    would cost the server CPU."""
    loaded, ready = multiprocessing.Event(), multiprocessing.Event()
    proc = multiprocessing.Process(target=client, args=(*args, loaded, ready))
    proc.start()
    loaded.wait()
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    ready.set()
    proc.join()
    while scrape_value(url, counter) < total:
        time.sleep(0.05)
    return time.perf_counter() - t0, cpu_seconds(pid) - cpu0


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


def callgrind_switch(on: bool) -> None:
    """Switch valgrind's callgrind instrumentation of this process on or off (around what is counted)."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], stdout=subprocess.DEVNULL, check=True)


def callgrind_count(script: str, *args: str) -> int:
    """Instructions callgrind counted in `python script --child *args` while the child had switched
    them on (callgrind_switch). Needs valgrind on the PATH."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null", sys.executable, script, "--child", *args],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, check=False,  # its stderr says why
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode or not found:
        raise SystemExit(f"{' '.join(args)}: valgrind failed:\n{out.stderr[-2000:]}")
    return int(found[1])


def callgrind_per_unit(script: str, stage: str, per_step: int) -> int:
    """Instructions per unit of `stage`: the child run for 6 steps minus for 2 (start-up and the
    switching cancel out), over the 4 steps' `per_step` units each."""
    return (callgrind_count(script, stage, "6") - callgrind_count(script, stage, "2")) // (4 * per_step)

