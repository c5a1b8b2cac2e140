"""Sending encoded batches to a sidecar, and knowing what became of them. Standard library only.

`write(data, n)` sends one batch of `n` events; `commit()` confirms everything written so
far. Each returns a `Result`:

- `OK`: `confirmed` events are known to be read by the sidecar (`rejected` more were refused
  as invalid); a write whose events are not confirmed yet leaves them in `in_doubt`.
- `RETRY`: nothing was delivered (no sidecar, overloaded); the same bytes may be sent again.
- `UNCONFIRMED`: the connection broke after bytes left, so an unknown part of `unconfirmed`
  events arrived; sending them again could count events twice, so the caller gives them up
  and says how many.
- `REFUSED`: the sidecar answered and will not take this batch (bad token, too large).

Unix socket: batches stream over one connection (the kernel buffer keeps the sidecar busy
while the next batch is encoded). To commit, the client half-closes and waits for the
sidecar to close its end: a clean end-of-file means the sidecar read every byte (Linux
reports ECONNRESET instead when unread bytes were thrown away), so a sidecar that stops
or restarts mid-stream is detected, never mistaken for a delivery. The next write opens a
new connection.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import NamedTuple

OK, RETRY, UNCONFIRMED, REFUSED = "ok", "retry", "unconfirmed", "refused"
SEND_BUFFER = 4 << 20


class Result(NamedTuple):
    status: str
    confirmed: int = 0
    rejected: int = 0
    unconfirmed: int = 0
    detail: str = ""


class UnixTransport:
    """NDJSON over the sidecar's Unix stream socket; a commit is a half-close answered by EOF."""

    def __init__(self, path: str, timeout: float):
        self.path = path
        self.timeout = timeout
        self.where = f"unix:{path}"
        self.in_doubt = 0  # events written on the open connection and not yet confirmed
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._aborted = False

    def write(self, data: bytes, n: int) -> Result:
        sock = self._sock
        if sock is None:
            if self._aborted:
                return Result(RETRY, detail="closed")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            # A deep send buffer lets a batch go in one copy instead of waiting (and giving up
            # the GIL) while the sidecar reads; the kernel caps it at net.core.wmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                return Result(RETRY, detail=f"connect: {exc}")
            with self._lock:
                self._sock = sock
        try:
            sock.sendall(data)
        except OSError as exc:
            return self._broken(n, exc)
        self.in_doubt += n
        return Result(OK)

    def commit(self) -> Result:
        sock = self._sock
        if sock is None:
            return Result(OK)
        try:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):  # the sidecar never answers; its EOF is the receipt
                pass
        except OSError as exc:
            return self._broken(0, exc)
        confirmed = self.in_doubt
        self._reset()
        return Result(OK, confirmed=confirmed)

    def _broken(self, n: int, exc: OSError) -> Result:
        lost = self.in_doubt + n
        self._reset()
        return Result(UNCONFIRMED, unconfirmed=lost, detail=f"connection broke mid-stream: {exc}")

    def _reset(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        self.in_doubt = 0
        if sock is not None:
            sock.close()

    def abort(self) -> None:
        """Unblock a write stuck on a stalled sidecar and refuse new ones (called at close)."""
        with self._lock:
            self._aborted = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._reset()

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's connection without touching it."""
        self._lock = threading.Lock()
        self._reset()  # close() only drops this process's descriptor; the parent's stays open


class HttpTransport:
    """POST /v1/events with an NDJSON body on a kept-alive connection; the answer says what was taken."""

    IDLE_REUSE = 2.0  # uvicorn drops idle connections after 5 s; never race it
    in_doubt = 0  # every answer says what was taken

    def __init__(self, url: str, token: str | None, timeout: float):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"sidecar url must look like http://HOST:PORT, not {url!r}")
        self.where = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/v1/events"
        self._headers = {"Content-Type": "application/x-ndjson"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._used = 0.0
        self._lock = threading.Lock()
        self._aborted = False

    def _connection(self) -> http.client.HTTPConnection:
        now = time.monotonic()
        if self._conn is not None and now - self._used > self.IDLE_REUSE:
            self.close()
        self._used = now
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            with self._lock:
                self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def write(self, data: bytes, n: int) -> Result:
        if self._aborted:
            return Result(RETRY, detail="closed")
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=data, headers=self._headers)
            response = conn.getresponse()
            body = response.read()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest) as exc:
            # Refused, or closed before any answer: uvicorn answers every request it has read,
            # even while shutting down, so nothing was taken.
            self.close()
            return Result(RETRY, detail=f"{type(exc).__name__}: {exc}")
        except (OSError, http.client.HTTPException) as exc:  # a timeout while it works: unknown
            self.close()
            return Result(UNCONFIRMED, unconfirmed=n, detail=f"{type(exc).__name__}: {exc}")
        if response.will_close:
            self.close()
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        status = response.status
        if status in (200, 202) or (status == 400 and "accepted" in answer):  # 400: every item was invalid
            rejected = answer.get("rejected", 0)
            rejected = min(n, rejected) if isinstance(rejected, int) and rejected >= 0 else 0
            return Result(OK, confirmed=n - rejected, rejected=rejected, detail=_first_error(answer))
        if status == 503 or status >= 500:
            return Result(RETRY, detail=f"HTTP {status}: {answer.get('error', '')}")
        return Result(REFUSED, detail=f"HTTP {status}: {_first_error(answer) or answer.get('error', '')}")

    def commit(self) -> Result:
        return Result(OK)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's connection without touching it."""
        self._lock = threading.Lock()
        self.close()


def _first_error(answer: dict) -> str:
    errors = answer.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("error", ""))
    return ""
