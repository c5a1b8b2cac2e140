"""`agent-sidecar tail`: a real CLI process (and the same code in-process) against a real sidecar."""

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from sidecar.cli import build_parser
from sidecar.commands.tail import Backoff, follow, format_event, tail_url
from sidecar.testing import event, ndjson, running_sidecar

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIVENESS = 15


def args_of(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["tail", *argv])


@pytest.mark.parametrize(
    "argv, url",
    [
        ([], "ws://127.0.0.1:8765/v1/tail"),
        (["--url", "https://h:1/base/"], "wss://h:1/base/v1/tail"),
        (["--url", "ws://h:2/v1/tail"], "ws://h:2/v1/tail"),
        (["--url", "h:3", "--agent", "a", "--agent", "b*"], "ws://h:3/v1/tail?agent=a&agent=b%2A"),
        (["--type", "llm.*", "--severity", "warning", "--run-id", "r1", "--model", "m", "--tool", "t", "--workflow", "w"],
         "ws://127.0.0.1:8765/v1/tail?type=llm.%2A&workflow=w&model=m&tool=t&run_id=r1&severity=warning"),
    ],
)
def test_flags_become_the_tail_url(argv, url):
    args = args_of(*argv)
    assert tail_url(args.url, args) == url


def test_readable_line_shows_time_severity_type_agent_workflow_duration_tokens_cost():
    raw = json.dumps(event("llm.call", timestamp=0, severity="warning", agent="planner", workflow="review",
                           duration_ms=1234.4, input_tokens=10, output_tokens=5, cost_usd=0.0123, error="rate_limit")).encode()
    line = format_event(raw, colour=False)
    assert line.split()[1:] == ["warning", "llm.call", "planner", "review", "1234ms", "i=10", "o=5", "$0.0123", "error=rate_limit"]
    assert format_event(raw, colour=True).startswith("\033[33m")
    bare = format_event(b'{"type": "x.failed", "timestamp": "2026-01-02T03:04:05.678Z", "received_at": 1}', colour=True)
    assert bare.split()[1:5] == ["error", "x.failed", "-", "-\033[0m"]
    assert bare.split()[0].endswith(":04:05.678")
    assert format_event(b'{"type": "x.y", "timestamp": "soon"}', colour=False).split()[0] == "-"


def test_cli_process_prints_what_was_sent_as_ndjson_and_exits_cleanly_on_ctrl_c():
    with running_sidecar() as s:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "tail", "--url", s.url, "--agent", "a", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO},
        )
        try:
            assert proc.stderr.readline().decode().startswith("connected to ws://")
            sent = [event(agent="a", n=1, payload={"k": [1, 2]}), event(agent="b"), event(agent="a", n=2)]
            s.send_unix(ndjson(*sent))
            lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
            assert [{k: v for k, v in e.items() if k != "received_at"} for e in lines] == [sent[0], sent[2]]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(LIVENESS) == 130
            assert b"Traceback" not in proc.stderr.read()
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def test_wrong_token_is_reported_and_exits_1():
    with running_sidecar(**{"tail.token": "t"}) as s:
        out = subprocess.run(
            [sys.executable, "-m", "sidecar", "tail", "--url", s.url, "--token", "nope"],
            capture_output=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=LIVENESS,
        )
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.startswith(f"agent-sidecar tail: ws://{s.url[7:]}/v1/tail answered HTTP 401 ") and "missing or wrong token" in err
    assert err.endswith("(pass --token or set $AGENT_SIDECAR_TOKEN: tail.token, else auth.token)\n")


async def test_follow_reports_drops_and_reconnects_after_the_sidecar_goes_away():
    out, err = io.StringIO(), io.StringIO()
    with running_sidecar(**{"tail.client_queue": 3}) as s:
        task = asyncio.create_task(follow(tail_url(s.url, args_of()), None, False, out, err))
        while "connected" not in err.getvalue():
            await asyncio.sleep(0.01)
        await asyncio.to_thread(s.send_unix, ndjson(*[event(agent=f"a{i}") for i in range(10)]))  # one batch
        while out.getvalue().count("\n") < 3:
            await asyncio.sleep(0.01)
    while "cannot connect" not in err.getvalue():  # the sidecar is gone: the next attempt fails
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "... 7 event(s) dropped: this client fell behind" in err.getvalue()
    assert [line.split()[3] for line in out.getvalue().splitlines()] == ["a7", "a8", "a9"]
    assert "disconnected (1001: sidecar shutting down); reconnecting" in err.getvalue()
    assert f"agent-sidecar tail: cannot connect to {tail_url(s.url, args_of())}: connection refused" in err.getvalue()


class CountingBackoff(Backoff):
    """The real backoff, tiny, counting the waits it hands out."""

    def __init__(self) -> None:
        super().__init__(first=0.01, cap=0.04)
        self.taken = 0

    def take(self) -> float:
        self.taken += 1
        return super().take()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_an_unreachable_sidecar_is_reported_once_with_the_backoff_while_tail_retries():
    out, err = io.StringIO(), io.StringIO()
    url = tail_url(_closed_port_url(), args_of())
    backoff = CountingBackoff()
    task = asyncio.create_task(follow(url, None, False, out, err, backoff))
    while backoff.taken < 5:  # five failed attempts
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert err.getvalue() == (
        f"agent-sidecar tail: cannot connect to {url}: connection refused "
        "(is `agent-sidecar run` running there? set --url); retrying in 0.01s, doubling up to every 0.04s, until Ctrl-C\n"
    )


async def test_a_server_that_hangs_up_during_the_handshake_is_retried_and_reported_once():
    accepted = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/tail"
    err = io.StringIO()
    task = asyncio.create_task(follow(url, None, False, io.StringIO(), err, CountingBackoff()))
    while accepted < 3:  # the server saw three attempts
        await asyncio.sleep(0.01)
    task.cancel()
    server.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith(f"agent-sidecar tail: cannot connect to {url}: ")


# A shell starts a background job (`cmd &` in a script, a CI step run in the background) with
# SIGINT ignored, and what it runs inherits that: exec'd here the same way.
_SIGINT_IGNORED = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.executable, sys.argv[1:])"


@pytest.mark.untraced
@pytest.mark.parametrize("started", ["normally", "with_sigint_ignored"])
def test_cli_process_against_an_unreachable_sidecar_says_so_at_once_and_stops_on_ctrl_c(started):
    url = _closed_port_url()
    command = [sys.executable, "-m", "sidecar", "tail", "--url", url]
    if started == "with_sigint_ignored":
        command = [sys.executable, "-c", _SIGINT_IGNORED, *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO})
    try:
        line = proc.stderr.readline().decode()
        assert line == (
            f"agent-sidecar tail: cannot connect to ws://{url[7:]}/v1/tail: connection refused "
            "(is `agent-sidecar run` running there? set --url); retrying in 0.5s, doubling up to every 10s, until Ctrl-C\n"
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(LIVENESS) == 130
        assert proc.stdout.read() == b"" and b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_a_url_tail_cannot_use_is_named(capsys):
    from sidecar.cli import main

    assert main(["tail", "--url", "ftp://h:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("agent-sidecar tail: ftp://h:1/v1/tail isn't a valid URI") and err.endswith("(set --url to http://HOST:PORT or ws://HOST:PORT)\n")
