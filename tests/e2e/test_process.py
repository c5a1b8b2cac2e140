"""The real `agent-sidecar run` process, driven only from outside."""

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from sidecar.testing import SidecarProcess, event, final_totals, ndjson

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.untraced
def test_sigterm_under_load_processes_everything_accepted_and_exits_0(spawn):
    proc = spawn()
    stop = threading.Event()
    sent = []

    def writer():
        chunk = ndjson(*[event(agent="load", duration_ms=5)] * 200)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(proc.unix)
            try:
                while not stop.is_set():
                    s.sendall(chunk)
                    sent.append(200)
            except OSError:
                pass  # the sidecar closed intake

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    while sum(sent) < 20_000:
        time.sleep(0.01)
    started = time.monotonic()
    rc = proc.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join()
    assert rc == 0
    assert time.monotonic() - started < 10  # shutdown_grace
    t = final_totals(proc.output)
    assert t["accepted"] >= 20_000
    assert t["processed"] == t["accepted"] == t["received"]
    assert t["rejected"] == t["dropped"] == 0


@pytest.mark.untraced
def test_kill_9_leaves_a_stale_socket_that_the_next_sidecar_replaces(spawn, tmp_path):
    first = spawn()
    first.proc.kill()
    first.proc.wait()
    assert os.path.exists(first.unix)  # what a crash leaves behind
    second = spawn("--unix", first.unix)
    assert second.unix == first.unix
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(second.unix)
        s.sendall(ndjson(event(agent="after-restart")))
    deadline = time.monotonic() + 10
    while "after-restart" not in httpx.get(second.url + "/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert second.stop() == 0
    assert not os.path.exists(second.unix)  # removed on a clean exit


def test_second_sidecar_on_a_live_socket_exits_1_with_a_clear_error(spawn):
    first = spawn()
    with pytest.raises(RuntimeError, match="another process is listening on .*is a sidecar already running"):
        spawn("--unix", first.unix)
    assert first.proc.poll() is None


@pytest.mark.untraced
def test_run_with_no_arguments_uses_the_embedded_default_config():
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8765)) == 0 or os.path.exists("/tmp/agent-sidecar.sock"):
            pytest.skip("the default port or socket is taken on this machine")
    proc = SidecarProcess([], env={"PYTHONPATH": REPO})
    try:
        assert (proc.url, proc.unix) == ("http://127.0.0.1:8765", "/tmp/agent-sidecar.sock")
        assert oct(os.stat(proc.unix).st_mode & 0o777) == "0o660"
        assert httpx.get(proc.url + "/readyz").json()["ready"] is True
    finally:
        assert proc.stop(signal.SIGINT) == 0
    assert "stopped:" in proc.output


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`agent-sidecar ARGS` as a real process, its memory capped (an alias bomb must not take
    the machine down with it when the code under test is broken)."""

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap_memory,
    )


WEAKENING_CONFIGS = {
    "empty token": ('auth:\n  token: ""\n', "auth.token: is empty, which would turn authentication off"),
    "duplicate key": ("auth:\n  token: s3cret\n  token: other\n", "auth.token: duplicate key (line 3)"),
    "inf duration": ("ingest:\n  max_clock_skew: .inf\n", "ingest.max_clock_skew: must be a finite duration"),
    "nan duration": ("shutdown_grace: .nan\n", "shutdown_grace: must be a finite duration"),
    "non-ASCII token": ("auth:\n  token: clé\n", "auth.token: must be printable ASCII"),
    "missing directory": ("listen:\n  unix: /nonexistent-dir/s.sock\n", "listen.unix: directory /nonexistent-dir does not exist"),
    "alias bomb": (None, "listen.http: more than 10000 values once YAML aliases are expanded"),
}


# Only "missing directory" reaches lines (in the started processes) that no other test reaches:
# the others run untraced (tests/coverage_owners.py).
@pytest.mark.parametrize(
    "name", [n if n == "missing directory" else pytest.param(n, marks=pytest.mark.untraced) for n in WEAKENING_CONFIGS]
)
def test_check_config_and_run_refuse_config_that_weakens_the_sidecar_with_path_and_reason(tmp_path, name):
    from tests.test_config import alias_bomb

    text, message = WEAKENING_CONFIGS[name]
    path = tmp_path / "c.yaml"
    path.write_text(text if text is not None else alias_bomb(), encoding="utf-8")
    checked = cli("check-config", str(path))
    assert checked.returncode == 1, checked
    assert f"  {message}" in checked.stderr, checked.stderr
    ran = cli("run", "--config", str(path), "--http", "127.0.0.1:0")
    assert ran.returncode == 2, ran
    assert message in ran.stderr and "Traceback" not in ran.stderr + ran.stdout, ran.stderr


def test_run_on_a_busy_port_names_the_address_and_what_to_try(spawn):
    first = spawn()
    address = first.url.removeprefix("http://")
    second = cli("run", "--http", address, "--unix", "")
    assert second.returncode == 1
    assert f"agent-sidecar: cannot listen for HTTP on {address}: the port is already in use" in second.stderr
    assert "--http HOST:PORT" in second.stderr and "Traceback" not in second.stderr + second.stdout
    assert first.proc.poll() is None


@pytest.mark.untraced
def test_run_with_a_socket_in_a_missing_directory_says_so_without_a_traceback(tmp_path):
    ran = cli("run", "--http", "127.0.0.1:0", "--unix", str(tmp_path / "gone" / "s.sock"))
    assert ran.returncode == 2
    assert f"listen.unix: directory {tmp_path / 'gone'} does not exist" in ran.stderr
    assert "Traceback" not in ran.stderr + ran.stdout


def test_run_refuses_connection_caps_that_do_not_fit_the_file_descriptor_limit(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    caps = hard if hard != resource.RLIM_INFINITY else 1 << 21
    path = tmp_path / "c.yaml"
    path.write_text(f"ingest:\n  max_connections: {caps}\n  max_http_connections: 64\ntail:\n  max_clients: 32\n")
    for args, rc in ((["check-config", str(path)], 1), (["run", "--config", str(path), "--http", "127.0.0.1:0"], 2)):
        done = cli(*args)
        assert done.returncode == rc, done
        assert f"ingest.max_connections ({caps}) + ingest.max_http_connections (64) + 128 reserved" in done.stderr
        assert "file descriptors, more than the limit of" in done.stderr


def test_run_raises_the_soft_file_descriptor_limit_to_the_hard_one_and_logs_it(spawn):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what the child inherits: a common default
    try:
        proc = spawn()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert f"file descriptors: soft limit raised from 1024 to {expected}" in proc.output
    with open(f"/proc/{proc.proc.pid}/limits") as f:
        (line,) = [x for x in f if x.startswith("Max open files")]
    assert line.split()[3] == str(expected)
