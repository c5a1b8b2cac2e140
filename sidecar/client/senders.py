"""The two ways bytes reach a sidecar, written once: NDJSON over its Unix socket, and POST /v1/events.

Standard library only. The SDK's transports, `agent-sidecar send` and `demo`, the test helpers
and the benchmarks all send through these. Failures are typed `ClientError`s whose message
names the socket or URL, says what went wrong and what to try; nothing here exits the process.

Unix socket: a stream of NDJSON lines. `finish()` half-closes and waits for the sidecar to close
its end: a clean end-of-file means the sidecar read every byte (Linux reports ECONNRESET instead
when unread bytes were thrown away), so a sidecar that stops mid-stream is never mistaken for
a delivery.
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Notify = Callable[[str], None]

RUN_HINT = "is `agent-sidecar run` running and listening there?"


class ClientError(Exception):
    """Sending to a sidecar failed; `target` is the socket path or URL, `hint` what to try."""

    def __init__(self, message: str, *, target: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.target = target
        self.hint = hint

    def add_hint(self, more: str) -> None:
        """Add advice the caller knows better (a CLI adds its flag names)."""
        if not self.hint:
            self.hint = more
        else:
            self.hint += f" {more}" if self.hint.endswith(("?", ".")) else f"; {more}"

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Unreachable(ClientError):
    """No connection could be made, so nothing was delivered; sending again is safe."""


class Unconfirmed(ClientError):
    """The connection broke after bytes left: an unknown part of them arrived."""


class Refused(ClientError):
    """The sidecar answered and will not take this request (bad token, too large, ...)."""

    def __init__(self, message: str, *, target: str, hint: str = "", status: int = 0):
        super().__init__(message, target=target, hint=hint)
        self.status = status


class Overloaded(ClientError):
    """The sidecar kept answering 503 (its queue is full) through every retry."""


def os_reason(exc: OSError) -> str:
    """`no such file` rather than `[Errno 2] No such file or directory: '/x'` (the caller names the thing)."""
    if isinstance(exc, socket.timeout):
        return "timed out"
    if exc.errno is not None:
        return {
            errno.ENOENT: "no such file",
            errno.ECONNREFUSED: "connection refused",
            errno.EACCES: "permission denied",
            errno.ENOTSOCK: "not a socket",
            errno.EISDIR: "is a directory",
        }.get(exc.errno, exc.strerror or str(exc)).lower()
    return str(exc) or type(exc).__name__


def _unix_unreachable(path: str, exc: OSError) -> Unreachable:
    hint = RUN_HINT
    if exc.errno == errno.ECONNREFUSED:
        hint = "a socket file is there but no sidecar accepts on it: is `agent-sidecar run` running?"
    elif exc.errno == errno.EACCES:
        hint = "run as a user that may write to it, or set listen.unix_mode"
    return Unreachable(f"cannot connect to {path}: {os_reason(exc)}", target=path, hint=hint)


def _unconfirmed(target: str, exc: OSError) -> Unconfirmed:
    return Unconfirmed(
        f"connection to {target} broke mid-stream: {os_reason(exc)}",
        target=target,
        hint="the sidecar stopped or restarted; some lines may not have arrived",
    )


def _unblock(sock: socket.socket | None) -> None:
    """Wake a thread blocked on `sock` (shutdown, not close: the descriptor stays its owner's)."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def announce_retry(notify: Notify | None, what: str, every: str) -> Notify | None:
    """Tell `notify` once that we are retrying and how; returns None so later calls stay quiet."""
    if notify is not None:
        notify(f"{what}; retrying {every}")
    return None


class UnixSender:
    """One NDJSON stream to the sidecar's Unix socket: `send` bytes, then `finish` (half-close, EOF).

    As a context manager it finishes on a clean exit and just closes on an error.
    """

    def __init__(self, path: str, timeout: float | None = 30.0, *, send_buffer: int = 0):
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        if send_buffer:
            # A deep send buffer lets a batch go in one copy instead of waiting (and giving up
            # the GIL) while the sidecar reads; the kernel caps it at net.core.wmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise _unix_unreachable(path, exc) from None
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()

    @classmethod
    def wait_for(
        cls, path: str, wait: float, timeout: float | None = 30.0, *, notify: Notify | None = None, every: float = 0.2
    ) -> UnixSender:
        """Connect, waiting up to `wait` seconds for the socket to appear (a sidecar still starting);
        `notify` hears once that we wait."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return cls(path, timeout)
            except Unreachable as exc:
                cause = exc.__context__
                if time.monotonic() >= deadline or not isinstance(cause, (FileNotFoundError, ConnectionRefusedError)):
                    raise
                notify = announce_retry(notify, str(exc), f"every {every:g}s for up to {wait:g}s")
            time.sleep(every)

    def send(self, data: bytes) -> None:
        sock = self._open()
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise _unconfirmed(self.path, exc) from None

    def finish(self) -> None:
        """Half-close and wait for the sidecar's EOF: only then has it read every byte."""
        sock = self._open()
        try:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):  # the sidecar never answers; its EOF is the receipt
                pass
        except OSError as exc:
            raise _unconfirmed(self.path, exc) from None
        finally:
            self.close()

    def _open(self) -> socket.socket:
        if self._sock is None:
            raise Unconfirmed(f"connection to {self.path} is closed", target=self.path)
        return self._sock

    def abort(self) -> None:
        """From another thread: unblock a send stuck on a stalled sidecar."""
        with self._lock:
            _unblock(self._sock)

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def after_fork(self) -> None:
        """In a forked child: drop this process's descriptor; the parent's connection stays open."""
        self._lock = threading.Lock()
        self.close()

    def __enter__(self) -> UnixSender:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close()


def send_unix(path: str, data: bytes | Iterable[bytes], timeout: float | None = 30.0) -> int:
    """Send NDJSON bytes (or chunks of them) over one connection and wait until the sidecar has
    read them all; returns the number of bytes sent."""
    sent = 0
    with UnixSender(path, timeout) as sender:
        for chunk in [data] if isinstance(data, bytes) else data:
            sender.send(chunk)
            sent += len(chunk)
    return sent


@dataclass
class Answer:
    """What the sidecar said to one POST: status, the JSON document (empty if none), Retry-After."""

    status: int
    doc: dict[str, Any] = field(default_factory=dict)
    retry_after: float = 1.0

    @property
    def first_error(self) -> str:
        errors = self.doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("error", ""))
        return ""

    @property
    def per_item(self) -> bool:
        """An answer that says what became of each line (even when none was taken)."""
        return self.status in (200, 202) or (self.status in (400, 413) and "accepted" in self.doc)


class HttpSender:
    """POST /v1/events with NDJSON bodies on one kept-alive connection."""

    IDLE_REUSE = 2.0  # uvicorn drops idle connections after 5 s; never race it

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"sidecar url must look like http://HOST:PORT, not {url!r}")
        self.url = url
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

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/v1/events"

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

    def post(self, body: bytes) -> Answer:
        """One POST. Raises `Unreachable` when nothing was taken, `Unconfirmed` when unknown."""
        if self._aborted:
            raise Unreachable(f"sender for {self.url} is closed", target=self.url)
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            raw = response.read()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest) as exc:
            # Refused, or closed before any answer: uvicorn answers every request it has read,
            # even while shutting down, so nothing was taken.
            self.close()
            why = os_reason(exc) if isinstance(exc, OSError) else "closed without an answer"
            raise Unreachable(f"cannot POST to {self.endpoint}: {why}", target=self.url, hint=RUN_HINT) from None
        except (OSError, http.client.HTTPException) as exc:  # e.g. a timeout while it works: unknown
            self.close()
            why = os_reason(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            raise Unconfirmed(
                f"POST to {self.endpoint} failed mid-request: {why}", target=self.url, hint="the batch may or may not have been taken"
            ) from None
        if response.will_close:
            self.close()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        try:
            retry_after = float(response.getheader("Retry-After") or 1)
        except ValueError:
            retry_after = 1.0
        return Answer(response.status, doc if isinstance(doc, dict) else {}, max(0.0, retry_after))

    def send(self, body: bytes, *, retries: int = 30, notify: Notify | None = None) -> dict[str, Any]:
        """POST one batch and return the sidecar's per-item answer (`accepted`, `rejected`, `errors`).

        A 503 (queue full) is retried after its Retry-After, `retries` times (`notify` hears once);
        then `Overloaded`. Any other refusal raises `Refused`.
        """
        for attempt in range(retries + 1):
            answer = self.post(body)
            if answer.per_item:
                return answer.doc
            if answer.status != 503:
                detail = answer.first_error or str(answer.doc.get("error", ""))
                raise Refused(
                    f"{self.endpoint} answered HTTP {answer.status}" + (f": {detail}" if detail else ""),
                    target=self.url,
                    hint=_refusal_hint(answer.status),
                    status=answer.status,
                )
            if attempt < retries:
                notify = announce_retry(
                    notify, f"{self.endpoint} is overloaded (HTTP 503, queue full)", f"after Retry-After ({answer.retry_after:g}s), up to {retries} times"
                )
                time.sleep(answer.retry_after)
        raise Overloaded(
            f"{self.endpoint} stayed overloaded (HTTP 503) through {retries} retries",
            target=self.url,
            hint="send slower, or raise ingest.queue_size",
        )

    def abort(self) -> None:
        """From another thread: unblock a request stuck on a stalled sidecar and refuse new ones."""
        with self._lock:
            self._aborted = True
            conn = self._conn
        if conn is not None:
            _unblock(conn.sock)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's connection without touching it."""
        self._lock = threading.Lock()
        self.close()


def _refusal_hint(status: int) -> str:
    if status == 401:
        return "pass the sidecar's auth.token as the bearer token"
    if status == 413:
        return "send smaller batches, or raise ingest.max_body_bytes"
    if status == 404:
        return "is this the sidecar's base URL (http://HOST:PORT)?"
    return ""


def post_ndjson(url: str, body: bytes, token: str | None = None, *, timeout: float = 30.0, retries: int = 30, notify: Notify | None = None) -> dict[str, Any]:
    """POST one NDJSON batch on a fresh connection; see `HttpSender.send`."""
    sender = HttpSender(url, token, timeout)
    try:
        return sender.send(body, retries=retries, notify=notify)
    finally:
        sender.close()
