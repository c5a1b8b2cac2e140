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


def test_send_to_a_missing_socket_names_it_and_says_what_to_try(tmp_path, capsys):
    sock = tmp_path / "nope.sock"
    assert main(["send", "--unix", str(sock), os.devnull]) == 1
    assert capsys.readouterr().err == (
        f"agent-sidecar send: cannot connect to {sock}: no such file "
        "(is `agent-sidecar run` running and listening there? set --unix PATH)\n"
    )


def test_send_to_a_socket_file_nobody_listens_on_says_so(tmp_path, capsys):
    import socket

    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # bound, never listening: what a crashed sidecar leaves behind
        assert main(["send", "--unix", str(path), os.devnull]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to {path}: connection refused" in err and "no sidecar accepts on it" in err


def test_send_to_an_unreachable_url_names_the_url(capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
    assert main(["send", "--url", url, os.devnull]) == 0  # nothing to send: no connection needed
    path = os.path.join(REPO, "README.md")  # any file with a line in it
    assert main(["send", "--url", url, path]) == 1
    assert capsys.readouterr().err.splitlines()[-1] + "\n" == (
        f"agent-sidecar send: cannot POST to {url}/v1/events: connection refused "
        "(is `agent-sidecar run` running and listening there? set --url URL)\n"
    )


def test_send_of_a_missing_file_names_the_file(tmp_path, capsys):
    assert main(["send", "--unix", str(tmp_path / "s.sock"), str(tmp_path / "events.ndjson")]) == 1
    assert capsys.readouterr().err == f"agent-sidecar send: cannot open {tmp_path / 'events.ndjson'}: no such file (check the path)\n"


def test_send_over_http_without_the_token_says_which_flag_is_missing(tmp_path, capsys):
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(event()))
    with running_sidecar(**{"auth.token": "t0k"}) as s:
        assert main(["send", "--url", s.url, str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"agent-sidecar send: {s.url}/v1/events answered HTTP 401")
    assert err.endswith("(pass the sidecar's auth.token as the bearer token; pass --token)\n")


def test_stats_against_an_unreachable_sidecar_names_the_url(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
    assert main(["stats", "--url", url]) == 1
    assert capsys.readouterr().err == (
        f"agent-sidecar stats: cannot reach {url}/v1/stats: connection refused "
        "(is `agent-sidecar run` running there? set --url URL)\n"
    )


def test_stats_without_the_token_names_the_url_and_the_flag(capsys):
    with running_sidecar(**{"auth.token": "t0k"}) as s:
        assert main(["stats", "--url", s.url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"agent-sidecar stats: {s.url}/v1/stats answered HTTP 401: ")
    assert err.endswith("(pass --token)\n")


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("run", "check-config", "send"):
        assert verb in out


def test_send_over_http_retries_while_the_sidecar_is_overloaded_and_says_so_once():
    import threading

    from sidecar.client import HttpSender, Overloaded

    with running_sidecar(**{"ingest.queue_size": 1}) as s:
        s.stall_pipeline()
        sender = HttpSender(s.url)
        said = []
        assert sender.send(ndjson(event()).strip())["accepted"] == 1  # fills the queue
        with pytest.raises(Overloaded, match=r"stayed overloaded \(HTTP 503\) through 1 retries \(send slower"):
            sender.send(ndjson(event()).strip(), retries=1, notify=said.append)
        assert said == [f"{s.url}/v1/events is overloaded (HTTP 503, queue full); retrying after Retry-After (1s), up to 1 times"]
        threading.Timer(0.5, s.resume_pipeline).start()
        assert sender.send(ndjson(event()).strip())["accepted"] == 1  # after one Retry-After
        sender.close()
        s.wait_processed(2)
