"""Faults with real `agent-sidecar run` processes: kill -9 mid-stream, SIGTERM under mixed load,
the socket file deleted under a running process."""

import asyncio
import os
import re
import resource
import signal
import socket
import stat
import threading

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sidecar.testing import event, final_totals, ndjson, wait_until


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics").text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m[1]) if m else 0.0


def stream_unix(path: str, stop: threading.Event) -> None:
    """Stream events to the Unix socket until `stop` is set or the sidecar closes intake."""
    chunk = ndjson(*[event(agent="load")] * 200)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        try:
            while not stop.is_set():
                s.sendall(chunk)
        except OSError:
            pass


@pytest.mark.untraced
def test_kill_9_mid_stream_then_restart_the_writer_sees_the_failure_and_later_events_arrive(spawn):
    first = spawn()
    chunk = ndjson(*[event(agent="before", duration_ms=1)] * 100)
    sent = []
    failed = threading.Event()

    def writer():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(first.unix)
            try:
                while True:
                    s.sendall(chunk)
                    sent.append(100)
            except OSError:
                failed.set()  # EPIPE / ECONNRESET: the writer knows what it could not deliver

    t = threading.Thread(target=writer)
    t.start()
    wait_until(lambda: sum(sent) >= 20_000, "20k events streamed")
    first.proc.send_signal(signal.SIGKILL)
    t.join(15)
    assert failed.is_set() and not t.is_alive()
    assert stat.S_ISSOCK(os.lstat(first.unix).st_mode)  # the stale file a crash leaves
    second = spawn("--unix", first.unix)
    with socket.socket(socket.AF_UNIX) as s:  # what a reconnecting client does
        s.connect(second.unix)
        s.sendall(ndjson(*[event(agent="after")] * 100))
    labels = '{agent="after",severity="info",type="llm.call",workflow=""}'
    wait_until(lambda: metric(second.url, "agent_events_total", labels) == 100, "100 events after the restart")
    assert second.stop() == 0
    t = final_totals(second.output)
    assert t["processed"] == t["accepted"] == t["received"] == 100


@pytest.mark.untraced
def test_sigterm_under_unix_and_http_load_processes_every_accepted_event(spawn):
    proc = spawn()
    stop = threading.Event()
    http_accepted = []

    def stream():
        stream_unix(proc.unix, stop)

    def http_writer():
        body = ndjson(*[event(agent="h")] * 100)
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/events", content=body, headers={"content-type": "application/x-ndjson"})
                except httpx.HTTPError:
                    return  # the sidecar is going away
                if r.status_code == 202:
                    http_accepted.append(r.json()["accepted"])

    threads = [threading.Thread(target=f) for f in (stream, stream, http_writer, http_writer)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(http_accepted) >= 1_000, "HTTP load running", timeout=60)  # the Unix streams compete for the same core
    rc = proc.stop(signal.SIGTERM, timeout=10 + 5)  # shutdown_grace, plus slack for a loaded machine
    stop.set()
    for t in threads:
        t.join(15)
    assert rc == 0
    t = final_totals(proc.output)
    assert t["processed"] == t["accepted"]  # everything accepted before the signal was processed
    assert t["received"] == t["accepted"] + t["rejected"] + t["dropped"]
    assert t["accepted"] >= sum(http_accepted)  # every 202 the clients got is in the totals


def test_socket_file_deleted_under_a_running_process_is_recreated(spawn):
    proc = spawn()
    os.unlink(proc.unix)
    wait_until(lambda: os.path.exists(proc.unix), "socket file recreated")
    assert stat.S_IMODE(os.stat(proc.unix).st_mode) == 0o660
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(proc.unix)
        s.sendall(ndjson(event(agent="after-delete")))
    wait_until(lambda: "after-delete" in httpx.get(proc.url + "/metrics").text, "event through the new socket")
    assert metric(proc.url, "sidecar_unix_socket_recreated_total") == 1
    assert proc.stop() == 0
    assert "recreated it" in proc.output


@pytest.mark.untraced
def test_sigterm_under_load_closes_tail_clients_with_1001_and_processes_everything_accepted(spawn):
    proc = spawn()
    stop = threading.Event()

    async def tail_client(started: asyncio.Event) -> int | None:
        async with connect(proc.url.replace("http://", "ws://") + "/v1/tail", max_size=None) as ws:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
                    started.set()  # events are flowing to this client
            except ConnectionClosed:
                return ws.close_code

    async def run() -> list[int | None]:
        ready = [asyncio.Event() for _ in range(3)]
        clients = [asyncio.create_task(tail_client(r)) for r in ready]
        writers = [threading.Thread(target=stream_unix, args=(proc.unix, stop)) for _ in range(2)]
        for w in writers:
            w.start()
        for r in ready:
            await asyncio.wait_for(r.wait(), 30)
        proc.proc.send_signal(signal.SIGTERM)  # under load, with every tail client receiving
        codes = await asyncio.gather(*clients)
        stop.set()
        for w in writers:
            w.join(15)
        return codes

    assert asyncio.run(run()) == [1001, 1001, 1001]
    assert proc.stop(timeout=10 + 5) == 0
    t = final_totals(proc.output)
    assert t["accepted"] > 0 and t["processed"] == t["accepted"] == t["received"]


# Issue 14, defects 7 and 8: connections that hold file descriptors or slots without delivering.


def tcp(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


def answer_of(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def agent_events(url: str, agent: str) -> float:
    return metric(url, "agent_events_total", f'{{agent="{agent}",severity="info",type="llm.call",workflow=""}}')


def test_http_connections_beyond_max_http_connections_get_503_and_are_counted(spawn):
    proc = spawn(config="ingest:\n  max_http_connections: 4\n  header_timeout: 1m\ntail:\n  max_clients: 2\n")
    held = [tcp(proc.url) for _ in range(4)]  # idle: each holds a descriptor until header_timeout
    extra = tcp(proc.url)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = answer_of(extra)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"ingest.max_http_connections" in answer
    for sock in (*held, extra):
        sock.close()
    wait_until(lambda: httpx.get(proc.url + "/healthz").status_code == 200, "served again once they left")
    assert metric(proc.url, "sidecar_http_connections_refused_total") == 1


def test_a_slow_body_is_answered_408_after_body_timeout_and_counted(spawn):
    proc = spawn(config="ingest:\n  body_timeout: 500ms\n")
    with tcp(proc.url) as slow:
        slow.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        answer = answer_of(slow)  # the rest of the body never comes
    assert answer.startswith(b"HTTP/1.1 408 ") and b"ingest.body_timeout" in answer
    assert metric(proc.url, "sidecar_http_body_timeouts_total") == 1
    assert metric(proc.url, "sidecar_http_header_timeouts_total") == 0
    r = httpx.post(proc.url + "/v1/events", json=event(agent="after"))
    assert r.status_code == 202  # everyone else is served as before


def test_out_of_file_descriptors_a_unix_client_waits_counted_and_loses_nothing(spawn):
    """Idle TCP connections used to exhaust the descriptors; then a Unix client's writes
    "succeeded" and its events vanished. Here the limit is cut under a running sidecar (as a
    tighter `ulimit -n` would), so accept() fails with EMFILE on both listeners."""
    proc = spawn(config="ingest:\n  header_timeout: 1m\n")
    resource.prlimit(proc.proc.pid, resource.RLIMIT_NOFILE, (200, 200))
    idle = [tcp(proc.url) for _ in range(250)]  # more than the sidecar has descriptors for
    wait_until(lambda: len(os.listdir(f"/proc/{proc.proc.pid}/fd")) >= 199, "the sidecar out of descriptors")
    sent = 100
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(proc.unix)  # the kernel queues it; the sidecar cannot accept it yet
        client.sendall(ndjson(*[event(agent="emfile")] * sent))
        client.shutdown(socket.SHUT_WR)
        wait_until(lambda: f"unix:{proc.unix}: accept() failed with EMFILE" in proc.output, "the failed accept logged")
        for sock in idle:
            sock.close()  # descriptors free up: the waiting client is accepted and read
        client.settimeout(30)
        assert client.recv(1) == b""  # the sidecar's end of file: everything was read
    wait_until(lambda: agent_events(proc.url, "emfile") == sent, f"{sent} events from the client that waited")
    assert metric(proc.url, "sidecar_accept_errors_total", '{error="EMFILE",listener="unix"}') >= 1
    assert metric(proc.url, "sidecar_accept_errors_total", '{error="EMFILE",listener="http"}') >= 1
    assert proc.stop() == 0


def trickle(path: str, stop: threading.Event) -> None:
    """A client that is never silent and never delivers: one byte every 200 ms, no newline."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        try:
            s.sendall(b'{"type":')
            while not stop.wait(0.2):
                s.sendall(b" ")
        except OSError:
            pass  # evicted


def test_trickling_unix_clients_are_evicted_for_a_client_that_delivers(spawn):
    proc = spawn(config="ingest:\n  max_connections: 3\n  evict_after: 1s\n")
    stop = threading.Event()
    tricklers = [threading.Thread(target=trickle, args=(proc.unix, stop)) for _ in range(3)]
    for t in tricklers:
        t.start()
    wait_until(lambda: metric(proc.url, "sidecar_unix_connections") == 3, "every slot held by a trickler")
    sent = 100
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(proc.unix)
            client.sendall(ndjson(*[event(agent="real")] * sent))
            client.shutdown(socket.SHUT_WR)
            client.settimeout(30)
            assert client.recv(1) == b""  # read to the end: nothing lost
    finally:
        stop.set()
        for t in tricklers:
            t.join(10)
    wait_until(lambda: agent_events(proc.url, "real") == sent, f"{sent} events from the new client")
    assert metric(proc.url, "sidecar_unix_connections_idle_closed_total") >= 1
    # what an evicted trickler had sent was read and counted, not dropped silently
    wait_until(lambda: metric(proc.url, "sidecar_events_rejected_total", '{reason="invalid_json",transport="unix"}') >= 1, "partial lines counted")
