"""The examples run as a user would run them, against a real sidecar, and everything they emit arrives."""

import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_example(name: str, sidecar, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "examples", name)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": REPO_ROOT, "AGENT_SIDECAR_SOCKET": sidecar.unix, **env},
    )
    assert out.returncode == 0, out.stderr
    assert "'dropped': 0, 'unconfirmed': 0" in out.stdout, out.stdout
    return out.stdout


def accepted(sidecar) -> float:
    return sidecar.value("sidecar_events_accepted_total", {"transport": "unix"}) or 0


@pytest.mark.untraced
@pytest.mark.parametrize(("name", "events"), [("plain_script.py", 29), ("async_agent.py", 3 * (2 + 4 + 3))])
def test_example_delivers_every_event(sidecar, name, events):
    run_example(name, sidecar, RUNS="3")
    sidecar.wait_processed(events)
    assert accepted(sidecar) == events


@pytest.mark.untraced
def test_multi_agent_example_ends_every_run_it_starts(sidecar):
    stdout = run_example("multi_agent_workflow.py", sidecar, RUNS="6")
    sent = int(stdout.split("'sent': ")[1].split(",")[0])
    sidecar.wait_processed(sent)
    runs = sum(sidecar.value("agent_workflow_runs_total", {"workflow": "code_review", "outcome": o}) or 0 for o in ("completed", "failed"))
    assert runs == 6 and sidecar.value("agent_workflows_active", {"workflow": "code_review"}) == 0
    assert sidecar.value("agent_invocations_active", {"agent": "coder"}) == 0
