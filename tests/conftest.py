import os
from collections.abc import Iterator

import pytest

from sidecar.testing import RunningSidecar, SidecarProcess, running_sidecar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sidecar() -> Iterator[RunningSidecar]:
    """A real sidecar (uvicorn + Unix listener) in a thread, default config."""
    with running_sidecar() as s:
        yield s


@pytest.fixture
def spawn(tmp_path):
    """Start real `agent-sidecar run` processes; all are stopped at teardown."""
    procs: list[SidecarProcess] = []

    def start(*args: str, config: str | None = None) -> SidecarProcess:
        argv = ["--http", "127.0.0.1:0", "--unix", str(tmp_path / f"s{len(procs)}.sock"), *args]
        if config is not None:
            path = tmp_path / f"config{len(procs)}.yaml"
            path.write_text(config)
            argv += ["--config", str(path)]
        # PYTHONPATH makes the child import this checkout, even from a git worktree.
        proc = SidecarProcess(argv, env={"PYTHONPATH": REPO})
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
        p.stop()
