"""Report agent events to agent-sidecar from Python, without ever blocking or failing the app.

Standard library only: importing this package never imports the sidecar's server
dependencies (msgspec, starlette, prometheus_client, ...).

    from sidecar.client import Emitter

    emitter = Emitter()                       # AGENT_SIDECAR_SOCKET / _URL / _TOKEN, else the default socket
    emitter.emit("tool.called", agent="coder", duration_ms=12.5)
    with emitter.workflow("code_review") as run:
        with run.agent("planner", model="gpt-4o") as inv:
            inv.record_tokens(input=512, output=128)

Plain NDJSON, synchronously (what `agent-sidecar send` does): `send_unix(path, data)` or
`post_ndjson(url, data)`; failures raise a `ClientError` that names the target and what to try.
"""

from sidecar.client.emitter import ENV_SOCKET, ENV_TOKEN, ENV_URL, Emitter, InvalidEvent
from sidecar.client.lifecycle import Invocation, Run, current_invocation, current_run
from sidecar.client.senders import (
    ClientError,
    HttpSender,
    Overloaded,
    Refused,
    Unconfirmed,
    UnixSender,
    Unreachable,
    post_ndjson,
    send_unix,
)
from sidecar.contract import DEFAULT_SOCKET

__all__ = [
    "ClientError",
    "DEFAULT_SOCKET",
    "ENV_SOCKET",
    "ENV_TOKEN",
    "ENV_URL",
    "Emitter",
    "HttpSender",
    "InvalidEvent",
    "Invocation",
    "Overloaded",
    "Refused",
    "Run",
    "Unconfirmed",
    "UnixSender",
    "Unreachable",
    "current_invocation",
    "current_run",
    "post_ndjson",
    "send_unix",
]
