"""The floors in pyproject.toml are true: the oldest release of each runtime dependency that the
sidecar allows is installed in a throwaway venv and a real sidecar process is put through
tests/floors/smoke.py (WebSocket keepalive pings and denial responses, the asyncio websockets
client, OpenMetrics exemplars, typed decoding, the numpy window store).

How the floors were found (2026-11-30): uvicorn < 0.44 sends no keepalive ping on websockets-sansio,
and < 0.52.1 mangles Starlette's WebSocket denial responses (401/403 at the handshake); every other
floor is the oldest release the smoke run passes on, and is what the code's APIs need
(websockets 13 brought `websockets.asyncio.client`, Starlette 0.37 `send_denial_response`);
googleapis-common-protos before 1.56.4 was generated for protobuf <= 3.20, which opentelemetry-proto
1.27 does not allow; msgspec before 0.18.6 refuses a generic Struct with gc=False (the OTLP span tree's
held spans), found by this test on 2026-12-01; isal 1.1.0 is the first release with CPython 3.11 wheels
(added 2026-12-02)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)>=([0-9][^;,\s]*)\s*(?:;.*)?$")


def floors() -> list[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = []
    for dep in deps:
        match = FLOOR.match(dep)
        assert match, f"runtime dependency {dep!r} must be written as name>=floor (optionally with a marker)"
        pins.append(f"{match[1]}=={match[2]}")
    return pins


def test_every_runtime_dependency_has_a_floor():
    assert {p.split("==")[0] for p in floors()} >= {"uvicorn", "starlette", "websockets", "prometheus-client", "msgspec"}


def test_the_sidecar_runs_on_the_oldest_releases_pyproject_allows(tmp_path):
    venv = tmp_path / "venv"
    # No pip of its own in the venv (ensurepip: 7 s); this pip installs into it, without byte-compiling.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check", "--no-compile", *floors()],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("COV_CORE")}
    smoke = subprocess.run([python, str(REPO / "tests" / "floors" / "smoke.py")], cwd=tmp_path,
                           env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=180)
    assert smoke.returncode == 0 and "smoke ok" in smoke.stdout, smoke.stdout + smoke.stderr
