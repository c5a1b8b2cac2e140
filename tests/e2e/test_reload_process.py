"""Config reload against real `agent-sidecar run` processes: SIGHUP and POST /-/reload, from outside."""

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from sidecar.client.senders import send_unix
from sidecar.testing import SidecarProcess, event, ndjson, wait_until

LIVENESS = 10  # seconds: only so a broken server fails the test instead of hanging it


def config_path(proc: SidecarProcess) -> Path:
    """The file the `spawn` fixture wrote the config to (what --config names)."""
    args = proc.proc.args
    assert isinstance(args, list)
    return Path(args[args.index("--config") + 1])


def sighup(proc: SidecarProcess) -> None:
    """SIGHUP, and wait for the reload's log line (success or failure)."""
    done = reloads_logged(proc)
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reloads_logged(proc) > done, "the SIGHUP reload's log line")


def reloads_logged(proc: SidecarProcess) -> int:
    return sum(1 for line in proc.lines if "config reload" in line and "(SIGHUP)" in line)


def reload(proc: SidecarProcess, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(proc.url + "/-/reload", headers=headers, timeout=LIVENESS)


def metric(proc: SidecarProcess, name: str, token: str | None = None) -> float:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = httpx.get(proc.url + "/metrics", headers=headers, timeout=LIVENESS).text
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert found, f"{name} not on /metrics"
    return float(found[1])


def total(proc: SidecarProcess, name: str, token: str | None = None) -> float:
    """The sum of every series of a counter on /metrics."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = httpx.get(proc.url + "/metrics", headers=headers, timeout=LIVENESS).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def stats(proc: SidecarProcess, token: str) -> dict:
    r = httpx.get(proc.url + "/v1/stats", headers={"Authorization": f"Bearer {token}"}, timeout=LIVENESS)
    assert r.status_code == 200, r.text
    return r.json()


def check_config_problems(path: Path) -> list[str]:
    """What `agent-sidecar check-config` prints for `path`, one problem a line."""
    done = subprocess.run([sys.executable, "-m", "sidecar", "check-config", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    return [line.strip() for line in done.stderr.splitlines()[1:]]


class KeepAlive:
    """One HTTP/1.1 connection reused for every request; `port` says which local socket it is."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=LIVENESS)
        self.conn.connect()
        self.port = self.conn.sock.getsockname()[1]

    def get(self, path: str, token: str) -> int:
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = self.conn.getresponse()
        response.read()
        assert self.conn.sock is not None and self.conn.sock.getsockname()[1] == self.port, "the connection was replaced"
        assert response.getheader("connection") != "close"
        return response.status

    def close(self) -> None:
        self.conn.close()


def tail_url(proc: SidecarProcess, token: str) -> str:
    return proc.url.replace("http://", "ws://") + f"/v1/tail?token={token}"


def test_sighup_rotates_the_token_and_drops_no_connection(spawn):
    proc = spawn(config="auth:\n  token: old-token\n")
    kept = KeepAlive(proc.url)
    assert kept.get("/v1/stats", "old-token") == 200
    before = metric(proc, "sidecar_config_last_reload_success_timestamp_seconds", "old-token")
    with connect(tail_url(proc, "old-token"), open_timeout=LIVENESS) as tail:
        config_path(proc).write_text("auth:\n  token: new-token\n")
        sighup(proc)

        assert kept.get("/v1/stats", "old-token") == 401  # the same connection, the next request
        assert kept.get("/v1/stats", "new-token") == 200
        assert httpx.get(proc.url + "/metrics", headers={"Authorization": "Bearer old-token"}).status_code == 401
        assert httpx.post(proc.url + "/v1/events", json=event(), headers={"Authorization": "Bearer old-token"}).status_code == 401
        with pytest.raises(InvalidStatus) as refused, connect(tail_url(proc, "old-token"), open_timeout=LIVENESS):
            pass
        assert refused.value.response.status_code == 401
        with connect(tail_url(proc, "new-token"), open_timeout=LIVENESS):
            pass

        # The tail client that was authenticated before the rotation still gets events.
        send_unix(proc.unix, ndjson(event("tool.call", agent="after-reload")))
        message = json.loads(tail.recv(timeout=LIVENESS))
        assert [e["agent"] for e in message["events"]] == ["after-reload"]
    kept.close()
    assert metric(proc, "sidecar_config_last_reload_successful", "new-token") == 1
    assert metric(proc, "sidecar_config_last_reload_success_timestamp_seconds", "new-token") > before
    line = proc.logged("config reloaded (SIGHUP)")
    assert "auth.token (changed)" in line
    assert "old-token" not in proc.output and "new-token" not in proc.output  # secrets never logged


BROKEN = """\
auth:
  token: ""
ingest:
  max_event_bytes: huge
log:
  level: loud
windows:
  durations: [1m, 1m, forever]
"""


@pytest.mark.untraced
def test_a_broken_file_changes_nothing_and_the_400_lists_every_problem_with_its_path(spawn):
    proc = spawn(config="auth:\n  token: t1\nlog:\n  level: info\n")
    path = config_path(proc)
    path.write_text(BROKEN)
    r = reload(proc, "t1")
    assert r.status_code == 400
    body = r.json()
    assert body["reloaded"] is False
    assert body["problems"] == check_config_problems(path)  # exactly what check-config prints
    assert any(p.startswith("auth.token: is empty") for p in body["problems"])
    assert any(p.startswith("ingest.max_event_bytes: ") for p in body["problems"])
    assert any(p.startswith("log.level: ") for p in body["problems"])
    assert any(p.startswith("windows.durations: ") for p in body["problems"])

    sighup(proc)  # the same file by signal: logged, not fatal
    assert proc.poll() is None
    assert "config reload (SIGHUP) failed, the previous config stays in force: auth.token: is empty" in proc.output
    assert stats(proc, "t1")["windows"]  # the old token still works (an empty one would have opened every route)
    assert httpx.get(proc.url + "/v1/stats").status_code == 401
    assert metric(proc, "sidecar_config_last_reload_successful", "t1") == 0

    for text in ("auth: [unclosed\n", "\x00\x01", "listen:\n  unix: relative.sock\n"):
        path.write_text(text)
        r = reload(proc, "t1")
        assert r.status_code == 400 and r.json()["problems"], text
    path.unlink()
    r = reload(proc, "t1")
    assert r.status_code == 400 and r.json()["problems"] == [f"{path}: cannot read: No such file or directory"]

    path.write_text("auth:\n  token: t2\n")  # fixed: the next reload succeeds
    assert reload(proc, "t1").json() == {"reloaded": True, "changed": [{"key": "auth.token"}], "needs_restart": []}
    assert metric(proc, "sidecar_config_last_reload_successful", "t2") == 1


def test_restart_only_keys_are_reported_and_left_as_they_were(spawn):
    proc = spawn(config="metrics:\n  max_series_per_metric: 1000\n")
    config_path(proc).write_text(
        "metrics:\n  max_series_per_metric: 500\n  duration_buckets: [0.1, 1]\n"
        "windows:\n  durations: [10m]\nlisten:\n  unix_mode: '0600'\n"
    )
    r = reload(proc)
    assert r.status_code == 200
    body = r.json()
    assert body["changed"] == [{"key": "metrics.max_series_per_metric", "from": 1000, "to": 500}]
    assert body["needs_restart"] == [
        {"key": "listen.unix_mode", "running": 0o660, "file": 0o600},
        {"key": "metrics.duration_buckets", "running": [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0], "file": [0.1, 1.0]},
        {"key": "windows.durations", "running": [60.0, 300.0, 900.0, 3600.0], "file": [600.0]},
    ]
    assert sorted(httpx.get(proc.url + "/v1/stats").json()["windows"]) == ["15m", "1h", "1m", "5m"]  # still the running ones
    send_unix(proc.unix, ndjson(event(duration_ms=3)))
    wait_until(lambda: total(proc, "sidecar_events_processed_total") == 1, "the event processed")
    assert 'le="0.05"' in httpx.get(proc.url + "/metrics").text  # still the running buckets
    assert oct(Path(proc.unix).stat().st_mode & 0o777) == "0o660"
    line = proc.logged("config reloaded (POST /-/reload)")
    assert "WARNING" in line and "needs a restart, left as running: listen.unix_mode: 0660 -> 0600; metrics.duration_buckets: [0.05, 0.1" in line

    # Asked again, the file still differs from what runs: reported again, never half-applied.
    again = reload(proc).json()
    assert again["changed"] == [] and [c["key"] for c in again["needs_restart"]] == [c["key"] for c in body["needs_restart"]]


def test_reload_without_the_token_is_401_and_reloads_nothing(spawn):
    proc = spawn(config="auth:\n  token: secret\n")
    config_path(proc).write_text("auth:\n  token: other\n")
    assert reload(proc).status_code == 401
    assert reload(proc, "wrong").status_code == 401
    assert httpx.get(proc.url + "/-/reload").status_code == 405  # a reload is never a GET a crawler could trigger
    assert stats(proc, "secret")["windows"]
    assert not any("config reload" in line for line in proc.lines)


@pytest.mark.untraced
def test_a_reload_under_load_loses_no_event(spawn):
    proc = spawn(config="auth:\n  token: t\nmetrics:\n  series_ttl: 1h\n")
    path = config_path(proc)
    unix_events = [event("llm.call", agent=f"a{i % 7}", duration_ms=i % 100) for i in range(40_000)]
    http_batches = [[event("tool.call", agent="h", duration_ms=1)] * 100 for _ in range(100)]
    statuses: list[int] = []

    def send_http() -> None:
        with httpx.Client(headers={"Authorization": "Bearer t"}, timeout=LIVENESS) as client:
            for batch in http_batches:
                r = client.post(proc.url + "/v1/events", json=batch)
                statuses.append(r.status_code)
                assert r.json()["accepted"] == len(batch), r.text

    def send_socket() -> None:
        for i in range(0, len(unix_events), 1000):
            send_unix(proc.unix, ndjson(*unix_events[i : i + 1000]))

    senders = [threading.Thread(target=send_http), threading.Thread(target=send_socket)]
    for t in senders:
        t.start()
    reloads = 0
    while any(t.is_alive() for t in senders) or reloads < 6:
        ttl = "2h" if reloads % 2 else "1h"
        path.write_text(f"auth:\n  token: t\nmetrics:\n  series_ttl: {ttl}\ntail:\n  max_clients: {500 + reloads}\n")
        if reloads % 3 == 0:
            sighup(proc)
        else:
            r = reload(proc, "t")
            assert r.status_code == 200 and [c["key"] for c in r.json()["changed"]] == ["metrics.series_ttl", "tail.max_clients"], r.text
        reloads += 1
    for t in senders:
        t.join()
    sent = len(unix_events) + sum(len(b) for b in http_batches)
    assert statuses == [202] * len(http_batches)
    wait_until(lambda: total(proc, "sidecar_events_processed_total", "t") == sent, "every event processed")
    assert total(proc, "agent_events_total", "t") == sent
    assert total(proc, "sidecar_events_received_total", "t") == sent
    assert stats(proc, "t")["windows"]["1h"]["events"] == sent
    assert metric(proc, "sidecar_config_last_reload_successful", "t") == 1
    assert proc.stop() == 0
    assert f"received={sent} accepted={sent} rejected=0 dropped=0 processed={sent}" in proc.output


def test_without_config_file_a_reload_says_there_is_nothing_to_re_read(spawn):
    proc = spawn()
    r = reload(proc)
    assert r.status_code == 400
    assert r.json()["problems"] == ["the sidecar was started without --config: there is no file to re-read"]
    sighup(proc)
    assert proc.poll() is None


def test_log_level_applies_from_the_reload_on(spawn):
    proc = spawn(config="log:\n  level: info\n")
    path = config_path(proc)
    path.write_text("log:\n  level: warning\n")
    assert reload(proc).status_code == 200  # its own INFO line is already under the new level
    assert reload(proc).json()["changed"] == []
    path.write_text("log:\n  level: info\n")
    assert reload(proc).status_code == 200
    proc.logged("config reloaded (POST /-/reload): applied log.level")
    # The pipe keeps order, so the two reloads under WARNING would have logged before this line.
    assert [line for line in proc.lines if "config reloaded" in line] == [proc.logged("config reloaded")]


def never_reading_tail(proc: SidecarProcess) -> socket.socket:
    """A tail client that completes the handshake and then reads nothing more."""
    parts = urlsplit(proc.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=LIVENESS)
    sock.sendall(
        f"GET /v1/tail HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing after the handshake is read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


@pytest.mark.untraced
def test_a_reloaded_shutdown_grace_bounds_the_next_shutdown(spawn):
    proc = spawn(config="shutdown_grace: 60s\n")
    config_path(proc).write_text("shutdown_grace: 2s\n")
    assert reload(proc).json()["changed"] == [{"key": "shutdown_grace", "from": 60.0, "to": 2.0}]
    with never_reading_tail(proc), socket.socket(socket.AF_UNIX) as s:
        s.connect(proc.unix)
        pad = "x" * 4000
        for _ in range(8):  # 16 MB for a reader that reads nothing: its send buffers fill
            s.sendall(ndjson(*[event(agent="a", pad=pad) for _ in range(500)]))
        proc.send_signal(signal.SIGTERM)
        assert proc.stop(timeout=30) == 0  # under the running 60 s it would still be waiting
    assert "1 live-tail client(s) read nothing" in proc.output
