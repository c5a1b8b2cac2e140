"""The real `agent-sidecar run` process, driven only from outside."""

import os
import signal
import socket
import threading
import time

import httpx
import pytest

from sidecar.testing import SidecarProcess, event, final_totals, ndjson

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
