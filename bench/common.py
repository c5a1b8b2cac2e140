"""Shared pieces of the benchmarks: a realistic event mix, a sidecar process, the ceiling probe."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CEILING = os.environ.get("CEILING", os.path.join(REPO, "..", "shared", "bench", "ceiling.py"))

AGENTS = [f"agent-{i:02d}" for i in range(20)]
WORKFLOWS = ["code_review", "research", "triage", "support", "planning"]
MODELS = ["gpt-4o", "claude-sonnet", "llama-3-70b"]
TYPES = ["llm.call", "tool.call", "agent.invoked", "agent.completed", "agent.failed", "workflow.started", "workflow.completed", "workflow.failed"]


def realistic_lines(n: int, seed: int = 1) -> list[bytes]:
    """n NDJSON lines over 20 agents x 5 workflows x 3 models x 8 types, ~250 bytes each."""
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


def start_sidecar(tmpdir: str, *extra: str, config: str | None = None) -> subprocess.Popen:
    """A real `agent-sidecar run`; returns the process with `.url` and `.unix` set."""
    args = [sys.executable, "-m", "sidecar", "run", "--http", "127.0.0.1:0", "--unix", os.path.join(tmpdir, "s.sock"), *extra]
    if config:
        path = os.path.join(tmpdir, "config.yaml")
        with open(path, "w") as f:
            f.write(config)
        args += ["--config", path]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO})
    for line in proc.stderr:
        line = line.decode()
        if " ready " in line:
            proc.url = re.search(r"http=(\S+)", line)[1]
            proc.unix = re.search(r"unix=(\S+)", line)[1]
            break
    else:
        raise RuntimeError("sidecar did not start")
    return proc


def scrape_value(url: str, name: str) -> float:
    """Sum of every sample called `name` in the sidecar's /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    return sum(float(m[1]) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


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
