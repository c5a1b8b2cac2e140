import os
import subprocess
import sys

import pytest

from sidecar import __version__
from sidecar.cli import main
from sidecar.testing import event, ndjson, running_sidecar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"agent-sidecar {__version__}"


def test_check_config_accepts_the_example(capsys):
    assert main(["check-config", os.path.join(REPO, "config.example.yaml")]) == 0
    assert capsys.readouterr().out.endswith(": ok\n")


def test_check_config_lists_every_problem(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("listen:\n  unix: relative\n  bogus: 1\ningest:\n  max_event_bytes: huge\n")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "listen.unix: must be an absolute path" in err
    assert "listen.bogus: unknown key" in err
    assert "ingest.max_event_bytes: must be a size" in err


def test_check_config_needs_a_path_and_can_print_defaults(capsys):
    assert main(["check-config"]) == 2
    assert main(["check-config", "--print-defaults"]) == 0
    assert "max_series_per_metric: 10000" in capsys.readouterr().out


def test_run_with_an_invalid_config_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("log: {level: loud}\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "log.level: must be one of" in capsys.readouterr().err


def test_run_refuses_a_socket_held_by_a_live_sidecar(capsys):
    with running_sidecar() as s:
        assert main(["run", "--http", "127.0.0.1:0", "--unix", s.unix]) == 1
        assert "another process is listening" in capsys.readouterr().err
        s.send_unix(ndjson(event()))  # the running one is untouched
        s.wait_processed(1)


def test_send_streams_a_file_over_the_socket(tmp_path, capsys):
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(*[event(agent="cli")] * 25))
    with running_sidecar() as s:
        assert main(["send", "--unix", s.unix, str(path)]) == 0
        s.wait_processed(25)
        assert s.value("agent_events_total", {"type": "llm.call", "agent": "cli", "workflow": "", "severity": "info"}) == 25
    assert "sent 25 line(s)" in capsys.readouterr().err


def test_send_over_http_from_stdin_reports_rejections(tmp_path):
    data = ndjson(*[event()] * 1500) + b"not json\n"
    with running_sidecar(**{"auth.token": "t0k"}) as s:
        out = subprocess.run(
            [sys.executable, "-m", "sidecar", "send", "--url", s.url, "--token", "t0k"],
            input=data, capture_output=True, env={**os.environ, "PYTHONPATH": REPO},
        )
        s.wait_processed(1500)
    assert out.returncode == 1
    assert "accepted 1500, rejected 1" in out.stderr.decode()
    assert "invalid_json" in out.stderr.decode()


def test_send_reports_a_missing_socket(tmp_path, capsys):
    assert main(["send", "--unix", str(tmp_path / "nope.sock"), os.devnull]) == 1
    assert "agent-sidecar send:" in capsys.readouterr().err


def test_send_over_http_fails_loudly_without_the_token(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(event()))
    with running_sidecar(**{"auth.token": "t0k"}) as s:
        with pytest.raises(SystemExit, match="HTTP 401"):
            main(["send", "--url", s.url, str(path)])


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("run", "check-config", "send"):
        assert verb in out


def test_send_over_http_retries_while_the_sidecar_is_overloaded():
    import asyncio
    import threading

    from sidecar.commands.send import post_batch

    with running_sidecar(**{"ingest.queue_size": 1}) as s:

        async def stall():
            for task in asyncio.all_tasks():
                if task.get_name() == "pipeline":
                    task.cancel()

        resumed = []

        async def resume():
            resumed.append(asyncio.create_task(s.sidecar.pipeline.run()))

        async def finish():  # the lifespan only drains the task it started itself
            await s.sidecar.pipeline.close()
            await resumed[0]

        asyncio.run_coroutine_threadsafe(stall(), s.loop).result(5)
        assert post_batch(s.url, [ndjson(event()).strip()], None)["accepted"] == 1  # fills the queue
        with pytest.raises(SystemExit, match="stayed overloaded"):
            post_batch(s.url, [ndjson(event()).strip()], None, retries=1)
        threading.Timer(0.5, lambda: asyncio.run_coroutine_threadsafe(resume(), s.loop)).start()
        assert post_batch(s.url, [ndjson(event()).strip()], None)["accepted"] == 1  # after one Retry-After
        s.wait_processed(2)
        asyncio.run_coroutine_threadsafe(finish(), s.loop).result(5)
