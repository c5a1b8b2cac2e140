"""What each transport reports for every way a sidecar can answer, or fail to."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sidecar.client import Emitter
from sidecar.client.transport import OK, REFUSED, RETRY, UNCONFIRMED, HttpTransport, UnixTransport


class Scripted:
    """A real HTTP server that answers POSTs from a script: (status, body) or 'hang' / 'close'."""

    def __init__(self, script):
        self.script = list(script)
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                step = outer.script.pop(0) if outer.script else (202, {"accepted": body.count(b"\n"), "rejected": 0})
                if step == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if step == "hang":
                    time.sleep(1.0)
                    return
                outer.bodies.append(body)
                status, answer = step
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(*script):
        servers.append(Scripted(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize(
    ("step", "status", "confirmed", "rejected"),
    [
        ((202, {"accepted": 3, "rejected": 1, "errors": [{"index": 2, "error": "invalid_field: x"}]}), OK, 3, 1),
        ((400, {"accepted": 0, "rejected": 4, "errors": []}), OK, 0, 4),
        ((503, {"error": "queue_full"}), RETRY, 0, 0),
        ((500, b"not json"), RETRY, 0, 0),
        ((413, {"accepted": 0, "rejected": 1, "errors": [{"index": None, "error": "too_large: body"}]}), REFUSED, 0, 0),
        ((401, [1, 2]), REFUSED, 0, 0),
        ("close", RETRY, 0, 0),
    ],
)
def test_http_answers_map_to_results(scripted, step, status, confirmed, rejected):
    server = scripted(step)
    result = HttpTransport(server.url, None, timeout=5).write(b"{}\n" * 4, 4)
    assert (result.status, result.confirmed, result.rejected) == (status, confirmed, rejected)


def test_an_http_answer_that_never_comes_is_unconfirmed(scripted):
    server = scripted("hang")
    result = HttpTransport(server.url, None, timeout=0.2).write(b"{}\n", 1)
    assert (result.status, result.unconfirmed) == (UNCONFIRMED, 1)


def test_an_overloaded_http_sidecar_is_retried_until_it_takes_the_batch(scripted):
    server = scripted((503, {"error": "queue_full"}), (503, {"error": "queue_full"}))
    emitter = Emitter(url=server.url + "/", token="t", max_backoff=0.05)
    for i in range(5):
        emitter.emit("llm.call", agent=str(i))
    assert emitter.flush(10)
    assert emitter.sent == 5 and emitter.dropped == 0
    assert [json.loads(line)["agent"] for line in server.bodies[0].splitlines()] == ["0", "1", "2", "3", "4"]
    emitter.close()


def test_unix_connect_refused_means_retry(tmp_path):
    path = str(tmp_path / "dead.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: like a killed sidecar
    transport = UnixTransport(path, timeout=5)
    assert transport.write(b"{}\n", 1).status == RETRY and transport.in_doubt == 0


def test_a_unix_peer_that_closes_with_unread_bytes_makes_everything_since_the_commit_unconfirmed(tmp_path):
    path = str(tmp_path / "flaky.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    transport = UnixTransport(path, timeout=5)
    assert transport.write(b'{"type":"a.b"}\n' * 10, 10).status == OK
    conn, _ = server.accept()
    conn.recv(20)  # reads part of it, then goes away: the rest is thrown away
    conn.close()
    result = transport.write(b'{"type":"a.b"}\n' * 5, 5)
    if result.status == OK:  # the kernel took the bytes before noticing; the commit finds out
        result = transport.commit()
    assert (result.status, result.unconfirmed) == (UNCONFIRMED, 15)
    assert transport.in_doubt == 0
    server.close()


def test_a_unix_commit_confirms_exactly_what_was_written(capture):
    transport = UnixTransport(capture.path, timeout=5)
    assert transport.commit() == (OK, 0, 0, 0, "")
    transport.write(b'{"type":"a.b"}\n' * 3, 3)
    transport.write(b'{"type":"a.c"}\n' * 2, 2)
    assert transport.commit().confirmed == 5
    assert [e["type"] for e in capture.events()] == ["a.b"] * 3 + ["a.c"] * 2 and capture.connections == 1
