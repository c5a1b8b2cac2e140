"""Faults and attacks on the listeners: a deleted socket file, idle and half-open Unix clients,
slow or endless HTTP headers. Each gets a clear answer and the sidecar keeps serving others."""

import asyncio
import os
import socket
import stat
import threading

import httpx

from sidecar.config import Config
from sidecar.ingest.http_guard import MAX_HEADER_BYTES
from sidecar.testing import FakeClock, event, ndjson, running_sidecar, wait_until


def maintain(s):
    """Run the Unix listener's periodic check now, on the sidecar's loop."""
    asyncio.run_coroutine_threadsafe(s.sidecar.listeners[0].maintain(), s.loop).result(10)


def closed_by_peer(sock) -> bool:
    sock.settimeout(10)
    return sock.recv(1) == b""


def test_deleted_socket_file_is_recreated_logged_and_counted(sidecar, caplog):
    before = socket.socket(socket.AF_UNIX)
    before.connect(sidecar.unix)
    os.unlink(sidecar.unix)
    maintain(sidecar)
    assert stat.S_ISSOCK(os.stat(sidecar.unix).st_mode)
    assert stat.S_IMODE(os.stat(sidecar.unix).st_mode) == 0o660
    assert sidecar.value("sidecar_unix_socket_recreated_total") == 1
    assert "was deleted under the running sidecar; recreated it" in caplog.text
    sidecar.send_unix(ndjson(event(agent="new")))  # new clients find the new file
    before.sendall(ndjson(event(agent="old")))  # clients of the old one carry on
    before.close()
    sidecar.wait_processed(2)
    maintain(sidecar)
    assert sidecar.value("sidecar_unix_socket_recreated_total") == 1


def test_a_file_put_in_place_of_the_socket_is_never_touched(tmp_path):
    with running_sidecar(**{"listen.unix": str(tmp_path / "s.sock")}) as s:
        os.unlink(s.unix)
        with open(s.unix, "w") as f:
            f.write("someone else's")
        maintain(s)
        maintain(s)
        assert s.value("sidecar_unix_socket_recreated_total") == 0
    with open(s.unix) as f:
        assert f.read() == "someone else's"  # not deleted at shutdown either


def test_a_silent_client_is_closed_after_idle_timeout():
    clock = FakeClock()
    with running_sidecar(clock=clock, **{"ingest.idle_timeout": 60}) as s:
        quiet, talking = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
        quiet.connect(s.unix)
        talking.connect(s.unix)
        wait_until(lambda: s.value("sidecar_unix_connections") == 2, "two clients")
        clock.advance(50)
        talking.sendall(ndjson(event()))
        s.wait_processed(1)
        clock.advance(20)  # quiet: 70 s silent; talking: 20 s
        maintain(s)
        assert closed_by_peer(quiet)
        assert s.value("sidecar_unix_connections_idle_closed_total") == 1
        talking.sendall(ndjson(event()))
        s.wait_processed(2)
        quiet.close()
        talking.close()


def test_idle_and_half_open_clients_make_room_for_a_real_one_at_max_connections():
    clock = FakeClock()
    with running_sidecar(clock=clock, **{"ingest.max_connections": 3}) as s:
        idle = [socket.socket(socket.AF_UNIX) for _ in range(3)]
        for sock in idle:
            sock.connect(s.unix)  # and never send anything
        wait_until(lambda: s.value("sidecar_unix_connections") == 3, "three idle clients")
        clock.advance(Config().ingest.evict_after + 1)
        s.send_unix(ndjson(event(agent="real")))
        s.wait_processed(1)
        assert s.value("sidecar_unix_connections_idle_closed_total") == 1
        assert s.value("sidecar_unix_connections_refused_total") == 0
        assert sum(closed_by_peer(sock) for sock in idle[:1]) == 1  # the idlest (first) went
        for sock in idle:
            sock.close()


def test_hundreds_of_idle_unix_and_slow_header_http_connections_do_not_stop_normal_clients(sidecar):
    host, port = sidecar.url.removeprefix("http://").split(":")
    held = []
    for _ in range(300):
        u = socket.socket(socket.AF_UNIX)
        u.connect(sidecar.unix)
        h = socket.create_connection((host, int(port)))
        h.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never finish
        held += [u, h]
    try:
        wait_until(lambda: sidecar.value("sidecar_unix_connections") == 300, "300 idle Unix clients")
        sidecar.send_unix(ndjson(event(agent="normal")))
        r = httpx.post(sidecar.url + "/v1/events", json=event(agent="normal"))
        assert r.status_code == 202
        sidecar.wait_processed(2)
        assert httpx.get(sidecar.url + "/metrics").status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_slow_headers_are_cut_off_after_header_timeout_and_counted():
    with running_sidecar(**{"ingest.header_timeout": 0.2}) as s:
        host, port = s.url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)))  # connects, sends nothing
        slow = socket.create_connection((host, int(port)))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never end
        assert closed_by_peer(silent) and closed_by_peer(slow)
        assert s.value("sidecar_http_header_timeouts_total") == 2
        assert httpx.get(s.url + "/healthz").status_code == 200  # a normal request is unaffected
        # a kept-alive connection gets a fresh deadline for each request's headers
        with httpx.Client() as client:
            for _ in range(3):
                assert client.get(s.url + "/healthz").status_code == 200
        silent.close()
        slow.close()


def test_endless_headers_get_431_and_the_connection_closed(sidecar):
    host, port = sidecar.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        filler = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        try:
            for _ in range(MAX_HEADER_BYTES // len(filler) + 10):
                sock.sendall(filler)
        except OSError:
            pass  # closed while we were still sending
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert sidecar.value("sidecar_http_header_too_large_total") == 1
    assert sidecar.value("sidecar_http_header_timeouts_total") == 0  # timeouts only, since issue 13


def test_the_header_deadline_is_lifted_once_headers_arrive_on_a_kept_alive_connection():
    """A body (or a handler) may take longer than ingest.header_timeout: only the headers race it."""
    with running_sidecar(**{"ingest.header_timeout": 0.3, "ingest.body_timeout": 30}) as s:
        body = ndjson(event(agent="kept-alive"))
        request = (
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.settimeout(10)
            for _ in range(2):  # the first request, then the second on the same connection
                sock.sendall(request)
                threading.Event().wait(0.6)  # twice the header deadline, between headers and body
                sock.sendall(body)
                answer = sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 202 "), answer
        s.wait_processed(2)
        assert s.value("sidecar_http_header_timeouts_total") == 0


def test_many_oversized_lines_in_one_read_are_each_counted_and_their_neighbours_kept():
    with running_sidecar(**{"ingest.max_event_bytes": 1024}) as s:
        big = ndjson(event(payload="x" * 2000))
        data = b"".join(big + ndjson(event(agent=f"n{i}")) for i in range(20))  # ~40 KiB: one read of 256 KiB
        s.send_unix(data)
        s.wait_processed(20)
        assert s.value("sidecar_events_rejected_total", {"transport": "unix", "reason": "too_large"}) == 20
        assert s.value("sidecar_events_accepted_total", {"transport": "unix"}) == 20
