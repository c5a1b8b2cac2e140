"""`agent-sidecar tail`: a real CLI process (and the same code in-process) against a real sidecar."""

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys

import pytest

from sidecar.cli import build_parser
from sidecar.commands.tail import follow, format_event, tail_url
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
        (["--type", "llm.*", "--severity", "warning", "--run-id", "r1", "--model", "m", "--workflow", "w"],
         "ws://127.0.0.1:8765/v1/tail?type=llm.%2A&workflow=w&model=m&run_id=r1&severity=warning"),
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
    assert "HTTP 401" in out.stderr.decode() and "missing or wrong token" in out.stderr.decode()


async def test_follow_reports_drops_and_reconnects_after_the_sidecar_goes_away():
    out, err = io.StringIO(), io.StringIO()
    with running_sidecar(**{"tail.client_queue": 3}) as s:
        task = asyncio.create_task(follow(tail_url(s.url, args_of()), None, False, out, err))
        while "connected" not in err.getvalue():
            await asyncio.sleep(0.01)
        await asyncio.to_thread(s.send_unix, ndjson(*[event(agent=f"a{i}") for i in range(10)]))  # one batch
        while out.getvalue().count("\n") < 3:
            await asyncio.sleep(0.01)
    while "reconnecting" not in err.getvalue():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "... 7 event(s) dropped: this client fell behind" in err.getvalue()
    assert [line.split()[3] for line in out.getvalue().splitlines()] == ["a7", "a8", "a9"]
    assert "disconnected (1001); reconnecting" in err.getvalue()
