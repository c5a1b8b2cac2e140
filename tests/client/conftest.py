import json
import os
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families


class CaptureServer:
    """A real Unix socket server that keeps every line it reads and, like the sidecar, closes
    its end once the client has half-closed and everything is read."""

    def __init__(self, path: str):
        self.path = path
        self.raw: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        chunks = []
        with conn:  # keep the lines before closing: the client takes our EOF as the receipt
            while data := conn.recv(1 << 16):
                chunks.append(data)
            with self._lock:
                self.connections += 1
                self.raw.extend(line for line in b"".join(chunks).split(b"\n") if line)

    def events(self) -> list[dict]:
        with self._lock:
            return [json.loads(line) for line in self.raw]

    def close(self) -> None:
        self._sock.close()
        os.unlink(self.path)


@pytest.fixture
def capture(tmp_path) -> Iterator[CaptureServer]:
    server = CaptureServer(str(tmp_path / "capture.sock"))
    yield server
    server.close()


def _scrape(url: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return sample.value
    return None


@pytest.fixture
def scrape():
    """scrape(url, name, labels): one sample's value from a real /metrics page (prometheus_client's parser)."""
    return _scrape
