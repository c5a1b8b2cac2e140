"""Report agent events to agent-sidecar from Python, without ever blocking or failing the app.

Standard library only: importing this package never imports the sidecar's server
dependencies (msgspec, starlette, prometheus_client, ...).

    from sidecar.client import Emitter

    emitter = Emitter()                       # AGENT_SIDECAR_SOCKET / _URL / _TOKEN, else the default socket
    emitter.emit("tool.called", agent="coder", duration_ms=12.5)
    with emitter.workflow("code_review") as run:
        with run.agent("planner", model="gpt-4o") as inv:
            inv.record_tokens(input=512, output=128)
"""

from sidecar.client.emitter import ENV_SOCKET, ENV_TOKEN, ENV_URL, Emitter, InvalidEvent
from sidecar.client.lifecycle import Invocation, Run, current_invocation, current_run
from sidecar.contract import DEFAULT_SOCKET

__all__ = [
    "DEFAULT_SOCKET",
    "ENV_SOCKET",
    "ENV_TOKEN",
    "ENV_URL",
    "Emitter",
    "InvalidEvent",
    "Invocation",
    "Run",
    "current_invocation",
    "current_run",
]
