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
new connection. The bytes move through `senders.py`, which the CLI and the tests use too.
"""

from __future__ import annotations

from typing import NamedTuple

from sidecar.client.senders import ClientError, HttpSender, UnixSender, Unreachable

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
        self._sender: UnixSender | None = None
        self._aborted = False

    def write(self, data: bytes, n: int) -> Result:
        sender = self._sender
        if sender is None:
            if self._aborted:
                return Result(RETRY, detail="closed")
            try:
                sender = self._sender = UnixSender(self.path, self.timeout, send_buffer=SEND_BUFFER)
            except Unreachable as exc:
                return Result(RETRY, detail=str(exc))
            if self._aborted:  # abort() ran while we connected: it could not see this sender
                sender.abort()
        try:
            sender.send(data)
        except ClientError as exc:
            return self._broken(n, exc)
        self.in_doubt += n
        return Result(OK)

    def commit(self) -> Result:
        sender = self._sender
        if sender is None:
            return Result(OK)
        try:
            sender.finish()
        except ClientError as exc:
            return self._broken(0, exc)
        confirmed = self.in_doubt
        self._reset()
        return Result(OK, confirmed=confirmed)

    def _broken(self, n: int, exc: ClientError) -> Result:
        lost = self.in_doubt + n
        self._reset()
        return Result(UNCONFIRMED, unconfirmed=lost, detail=str(exc))

    def _reset(self) -> None:
        sender, self._sender = self._sender, None
        self.in_doubt = 0
        if sender is not None:
            sender.close()

    def abort(self) -> None:
        """Unblock a write stuck on a stalled sidecar and refuse new ones (called at close)."""
        self._aborted = True
        sender = self._sender
        if sender is not None:
            sender.abort()

    def close(self) -> None:
        self._reset()

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's connection without touching it."""
        sender, self._sender = self._sender, None
        self.in_doubt = 0
        if sender is not None:
            sender.after_fork()


class HttpTransport:
    """POST /v1/events with an NDJSON body on a kept-alive connection; the answer says what was taken."""

    in_doubt = 0  # every answer says what was taken

    def __init__(self, url: str, token: str | None, timeout: float):
        self._http = HttpSender(url, token, timeout)
        self.where = url
        self.timeout = timeout

    def write(self, data: bytes, n: int) -> Result:
        try:
            answer = self._http.post(data)
        except Unreachable as exc:
            return Result(RETRY, detail=str(exc))
        except ClientError as exc:
            return Result(UNCONFIRMED, unconfirmed=n, detail=str(exc))
        if answer.status in (200, 202) or (answer.status == 400 and "accepted" in answer.doc):  # 400: every item was invalid
            rejected = answer.doc.get("rejected", 0)
            rejected = min(n, rejected) if isinstance(rejected, int) and rejected >= 0 else 0
            return Result(OK, confirmed=n - rejected, rejected=rejected, detail=answer.first_error)
        if answer.status >= 500:
            return Result(RETRY, detail=f"HTTP {answer.status}: {answer.doc.get('error', '')}")
        return Result(REFUSED, detail=f"HTTP {answer.status}: {answer.first_error or answer.doc.get('error', '')}")

    def commit(self) -> Result:
        return Result(OK)

    def abort(self) -> None:
        self._http.abort()

    def close(self) -> None:
        self._http.close()

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's connection without touching it."""
        self._http.after_fork()
