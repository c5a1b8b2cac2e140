"""sidecar.client runs with the standard library alone."""

import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SERVER_DEPS = ("msgspec", "starlette", "prometheus_client", "yaml", "uvicorn", "websockets", "httpx", "opentelemetry")

# -I: ignore PYTHONPATH and the user site; -S: no site-packages at all, so not one third-party
# package is importable. On top, a finder that fails any import of a server dependency, so a
# stray import would fail loudly even where -S leaves something on the path.
SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
BLOCKED = {deps!r}

class Guard:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked server dependency: " + name)

sys.meta_path.insert(0, Guard())
from sidecar.client import Emitter
import sidecar.client.emitter, sidecar.client.lifecycle, sidecar.client.senders, sidecar.client.transport, sidecar.contract
from sidecar.client import send_unix
send_unix({sock!r}, b'{{"type": "plain.sent"}}\\n')
emitter = Emitter(unix={sock!r})
emitter.emit("tool.called", agent="coder", duration_ms=1.5)
with emitter.workflow("review") as run:
    with run.agent("planner", model="m") as inv:
        inv.record_tokens(input=3, output=4)
print(emitter.close(10), emitter.sent, sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED), run.trace_id)
"""


def test_the_sdk_imports_and_delivers_with_only_the_standard_library(capture):
    code = SCRIPT.format(repo=REPO_ROOT, deps=SERVER_DEPS, sock=capture.path)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    closed, sent, loaded, trace_id = out.stdout.split(maxsplit=3)
    assert (closed, sent, loaded) == ("True", "5", "[]")
    events = capture.events()
    assert [e["type"] for e in events] == [
        "plain.sent", "tool.called", "workflow.started", "agent.invoked", "agent.completed", "workflow.completed"
    ]
    # without OpenTelemetry the run's trace id is generated, and its agent shares it
    assert len(trace_id.strip()) == 32 and {e["trace_id"] for e in events[2:]} == {trace_id.strip()}


def test_the_isolated_interpreter_really_lacks_the_server_dependencies():
    code = "import importlib.util, json; print(json.dumps([importlib.util.find_spec(m) is None for m in %r]))" % (SERVER_DEPS,)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == [True] * len(SERVER_DEPS)


@pytest.mark.untraced
def test_importing_the_client_in_this_process_pulls_in_no_server_module():
    code = "import sys; import sidecar.client; print(sorted(m for m in sys.modules if m.startswith('sidecar')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert json.loads(out.stdout.replace("'", '"')) == [
        "sidecar", "sidecar.client", "sidecar.client.emitter", "sidecar.client.lifecycle", "sidecar.client.senders",
        "sidecar.client.transport", "sidecar.contract"
    ]
