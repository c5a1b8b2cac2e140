"""`Emitter`: validate and queue events in the app's thread, send them from a background one.

`emit()` does a few dict lookups, stamps the time and appends to a bounded deque; it never
waits for I/O, takes no lock unless it has to drop, and never raises into the app. A flusher
thread takes batches off the deque, encodes them as NDJSON (many events per `sendall`) and
hands them to a transport, backing off while the sidecar is away. Everything that does not
reach the sidecar is counted: `dropped` (by reason in `drops`) and `unconfirmed`.
"""

from __future__ import annotations

import atexit
import collections
import json
import json.encoder
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sidecar.client.lifecycle import Invocation, Run
from sidecar.client.transport import REFUSED, RETRY, UNCONFIRMED, HttpTransport, Result, UnixTransport
from sidecar.contract import AMOUNT, BOOL, COUNT, DEFAULT_SOCKET, FIELDS, MAXIMUM, SEVERITY, STR, TIMESTAMP, field_problem, problem, timestamp_seconds, valid_type

log = logging.getLogger("sidecar.client")

ENV_SOCKET = "AGENT_SIDECAR_SOCKET"
ENV_URL = "AGENT_SIDECAR_URL"
ENV_TOKEN = "AGENT_SIDECAR_TOKEN"

_NEW, _RUNNING, _CLOSED = 0, 1, 2
_MAX_TYPES = 10_000  # valid type names remembered; beyond it they are checked each time


class InvalidEvent(ValueError):
    """An event the sidecar would reject; raised by `emit` only when the Emitter is `strict`."""


def _line_encoder() -> Callable[[Any], bytes]:
    """Compact, strict JSON for one event: msgspec's encoder when it is installed (about 6x faster,
    and always there beside the sidecar), else the stdlib's C encoder, made once."""
    try:
        import msgspec
    except ImportError:
        pass
    else:
        return msgspec.json.Encoder().encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
        return lambda event: encode(event).encode()

    def refuse(obj: Any) -> Any:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    # markers=None skips the circular-reference check: a cycle ends in RecursionError instead.
    encoder = make(None, refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    join = "".join
    return lambda event: join(encoder(event, 0)).encode()


class _Severity:
    """Stands for the severity field's expected class so that its value always takes the slow path."""


_MAX_FLOAT = 1.7976931348623157e308
# The class each known field's value has on the fast path; anything else takes the slow path
# (None, an int amount, a datetime timestamp, a severity), which accepts or explains.
_EXPECT: dict[str, type[Any]] = {
    name: {STR: str, AMOUNT: float, COUNT: int, BOOL: bool, SEVERITY: _Severity, TIMESTAMP: float}[kind]
    for name, kind in FIELDS.items()
}


_live: weakref.WeakSet[Emitter] = weakref.WeakSet()


class Emitter:
    """Reports agent events to a sidecar without ever blocking or failing the app.

    `Emitter()` reads `AGENT_SIDECAR_SOCKET`, then `AGENT_SIDECAR_URL` (with
    `AGENT_SIDECAR_TOKEN`), else uses the sidecar's default socket. Pass `unix=` or `url=`
    to choose. `fields` are added to every event (e.g. `session_id=`).

    Bounds: at most `max_buffer` events wait in memory (beyond it new events are dropped and
    counted), plus the one batch being sent. `timeout` bounds one send; `max_backoff` caps
    the wait between reconnect attempts. On the Unix socket, delivery is confirmed at least
    every `commit_every` events and whenever the buffer runs empty; a connection that breaks
    before that counts what it carried as `unconfirmed`.

    `strict=True` raises `InvalidEvent` from `emit` (for tests and development); by default
    invalid events are dropped, counted and logged once per distinct reason.
    """

    def __init__(
        self,
        unix: str | None = None,
        url: str | None = None,
        token: str | None = None,
        *,
        max_buffer: int = 100_000,
        batch_size: int = 2000,
        max_batch_bytes: int = 1 << 20,
        max_event_bytes: int = 64 * 1024,
        flush_interval: float = 0.05,
        timeout: float = 10.0,
        max_backoff: float = 5.0,
        commit_every: int = 20_000,
        strict: bool = False,
        **fields: Any,
    ):
        if unix and url:
            raise ValueError("pass unix= or url=, not both")
        if not unix and not url:
            unix = os.environ.get(ENV_SOCKET) or None
            url = None if unix else os.environ.get(ENV_URL) or None
            unix = unix or (None if url else DEFAULT_SOCKET)
        if token is None:
            token = os.environ.get(ENV_TOKEN) or None
        reason = problem("x", fields)
        if reason:
            raise InvalidEvent(reason)
        self._transport: UnixTransport | HttpTransport
        if unix:
            self._transport = UnixTransport(unix, timeout)
        else:
            assert url is not None  # the defaults above always choose one of the two
            self._transport = HttpTransport(url, token, timeout)
        self.target = self._transport.where
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.max_event_bytes = max_event_bytes
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.commit_every = commit_every
        self.strict = strict
        self.fields = fields
        self.sent = 0
        self.unconfirmed = 0
        self.drops: dict[str, int] = {}
        self._encode = _line_encoder()
        self._types: set[str] = set()
        self._warned: set[str] = set()
        self._state = _NEW
        self._init_threading()
        _live.add(self)

    def _init_threading(self) -> None:
        self._buf: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._wake_at = max(1, self.batch_size // 2)
        self._idle = threading.Condition(threading.Lock())
        self._drop_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: tuple[bytes, int] | None = None
        self._busy = False
        self._urgent = False
        self._stopping = False
        self._failures = 0
        self._retry_at = 0.0

    # -- the app's side ---------------------------------------------------------------

    def emit(self, type: str, /, **fields: Any) -> bool:
        """Queue one event; True when queued, False when it was dropped (and counted).

        Known fields are checked as the sidecar would; `timestamp` defaults to now.
        """
        try:
            if type not in self._types and not self._learn(type):
                return self._invalid(type, fields)
            expect = _EXPECT.get
            for name, value in fields.items():
                cls = expect(name)
                if cls is None:  # not a field the sidecar reads: it only has to be JSON
                    continue
                if value.__class__ is cls:
                    if cls is str or cls is bool or 0 <= value <= MAXIMUM.get(name, _MAX_FLOAT):
                        continue
                    return self._invalid(type, fields)
                if value is None:
                    continue
                if cls is float and name == "timestamp":
                    ts = timestamp_seconds(value)
                    if ts is None:
                        return self._invalid(type, fields)
                    fields["timestamp"] = ts
                elif field_problem(name, value) is not None:
                    return self._invalid(type, fields)
            if self.fields:
                fields = {**self.fields, **fields}
            if fields.get("timestamp") is None:
                fields["timestamp"] = time.time()
            if self._state is not _RUNNING:
                if self._state is _CLOSED:
                    return self._drop("closed")
                self._start()
            buf = self._buf
            n = len(buf)
            if n >= self.max_buffer:
                return self._drop("buffer_full")
            fields["type"] = type
            buf.append(fields)
            if n + 1 == self._wake_at:
                self._wake.set()
            return True
        except InvalidEvent:
            raise
        except Exception:  # a bug here must cost an event, never the app
            if not isinstance(type, str):  # e.g. an unhashable "type"
                return self._invalid(type, fields)
            log.exception("sidecar.client: emit failed")
            return self._drop("internal")

    def _learn(self, event_type: Any) -> bool:
        if not isinstance(event_type, str) or not valid_type(event_type):
            return False
        if len(self._types) < _MAX_TYPES:
            self._types.add(event_type)
        return True

    def _invalid(self, event_type: Any, fields: dict[str, Any]) -> bool:
        reason = problem(event_type, fields) or "invalid event"
        if self.strict:
            raise InvalidEvent(reason)
        self._warn_once(reason, "sidecar.client: dropping invalid %r event: %s", event_type, reason)
        return self._drop("invalid")

    def _drop(self, reason: str, n: int = 1) -> bool:
        with self._drop_lock:
            self.drops[reason] = self.drops.get(reason, 0) + n
        return False

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned and len(self._warned) < 1000:
            self._warned.add(key)
            log.warning(msg, *args)

    @property
    def dropped(self) -> int:
        """Events given up on purpose: invalid, buffer full, refused by the sidecar, closed."""
        with self._drop_lock:  # another thread may be adding a reason
            return sum(self.drops.values())

    @property
    def buffered(self) -> int:
        """Events waiting to be sent (including the batch being sent)."""
        pending = self._pending
        return len(self._buf) + (pending[1] if pending else 0)

    def stats(self) -> dict[str, Any]:
        """Where events go and what became of them: sent (confirmed), buffered, dropped
        (with `drops` by reason) and unconfirmed (on a connection that broke)."""
        with self._drop_lock:
            drops = dict(self.drops)
        return {
            "target": self.target,
            "sent": self.sent,
            "buffered": self.buffered,
            "dropped": sum(drops.values()),
            "unconfirmed": self.unconfirmed,
            "drops": drops,
        }

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is confirmed sent (or given up); False when `timeout` ran out.

        A flush retries at once even while backing off, so it is the way to say "now".
        """
        if self._thread is None:
            return not self._buf
        deadline = time.monotonic() + timeout
        self._urgent = True
        self._wake.set()
        with self._idle:
            while self._buf or self._pending is not None or self._busy or self._transport.in_doubt:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(remaining, 0.1))
                if not self._busy and not self._stopping:  # backing off: try again now, the caller waits
                    self._urgent = True
                    self._wake.set()
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for up to `timeout`, then stop the flusher; True when everything was delivered.

        What is left is counted in `drops["unsent"]`. Runs at interpreter exit too (2 s).
        Events emitted afterwards are dropped and counted as "closed".
        """
        if self._state is _CLOSED:
            return True
        deadline = time.monotonic() + timeout
        with self._start_lock:
            started, self._state = self._state is _RUNNING, _CLOSED
        ok = self.flush(timeout) if started else not self._buf
        self._stopping = True
        self._urgent = False
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():  # stuck on a stalled sidecar: cut the connection
                self._transport.abort()
                thread.join(1.0)
            # the flusher counts what it leaves behind as it exits (see _run)
        else:
            self._discard_leftovers()
        _live.discard(self)
        return ok and not self.drops.get("unsent", 0)

    def _discard_leftovers(self) -> None:
        left = self.buffered
        self._buf.clear()
        self._pending = None
        if left:
            self._drop("unsent", left)
            log.warning("sidecar.client: closed with %d event(s) unsent to %s", left, self.target)
        self._transport.close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def aflush(self, timeout: float = 5.0) -> bool:
        """`flush` for async code: waits in a worker thread, never on the event loop."""
        import asyncio

        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float = 5.0) -> bool:
        """`close` for async code (`async with Emitter() as emitter:` calls it on exit)."""
        import asyncio

        return await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> Emitter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- lifecycle helpers (see lifecycle.py) --------------------------------------------

    def workflow(self, name: str, **fields: Any) -> Run:
        """`with emitter.workflow("review") as run:` (or `@emitter.workflow(...)`): one workflow run."""
        return Run(self, name, fields)

    def agent(self, name: str, **fields: Any) -> Invocation:
        """`with emitter.agent("coder") as inv:` (or `@emitter.agent(...)`): one agent invocation,
        inside the current workflow run if there is one."""
        return Invocation(self, name, fields, None)

    # -- the flusher's side -------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._state is not _NEW:
                return
            self._thread = threading.Thread(target=self._run, name=f"sidecar-client-flusher:{self.target}", daemon=True)
            self._thread.start()
            self._state = _RUNNING

    def _run(self) -> None:
        wake = self._wake
        try:
            while not self._stopping:
                wait = self.flush_interval
                if self._failures and not self._urgent:
                    wait = max(0.0, self._retry_at - time.monotonic())
                wake.wait(wait)
                wake.clear()
                try:
                    self._drain()
                except Exception:  # pragma: no cover - a bug; keep the flusher alive, count the batch
                    log.exception("sidecar.client: flusher failed")
                    pending, self._pending = self._pending, None
                    if pending is not None:
                        self._drop("internal", pending[1])
        finally:
            self._discard_leftovers()

    def _drain(self) -> None:
        with self._idle:
            self._busy = True
        transport = self._transport
        try:
            while not self._stopping or self._urgent:
                if self._pending is None:
                    if not self._buf:
                        if transport.in_doubt:  # caught up: confirm what is on the wire
                            self._settle(transport.commit(), 0)
                        break
                    self._pending = self._next_batch()
                    continue
                if self._failures and not self._urgent and time.monotonic() < self._retry_at:
                    break
                self._urgent = False
                data, n = self._pending
                result = transport.write(data, n)
                self._settle(result, n)
                if result.status == RETRY:
                    break
                if transport.in_doubt >= self.commit_every:
                    self._settle(transport.commit(), 0)
        finally:
            with self._idle:
                self._busy = False
                self._idle.notify_all()

    def _next_batch(self) -> tuple[bytes, int] | None:
        buf = self._buf
        encode = self._encode
        limit = self.max_event_bytes
        parts: list[bytes] = []
        size = 0
        count = self.batch_size
        max_bytes = self.max_batch_bytes
        while buf and count and size < max_bytes:
            event = buf.popleft()
            count -= 1
            try:
                line = encode(event)
            except (TypeError, ValueError, RecursionError) as exc:
                self._warn_once(f"enc:{type(exc).__name__}", "sidecar.client: dropping an event that is not JSON: %s", exc)
                self._drop("not_json")
                continue
            if len(line) >= limit:
                self._warn_once("too_large", "sidecar.client: dropping an event of %d bytes (max_event_bytes %d)", len(line), limit)
                self._drop("too_large")
                continue
            parts.append(line)
            size += len(line) + 1
        if not parts:
            return None
        parts.append(b"")
        return b"\n".join(parts), len(parts) - 1

    def _settle(self, result: Result, n: int) -> None:
        status = result.status
        if status == RETRY:
            self._failures += 1
            delay = min(self.max_backoff, 0.05 * 2 ** min(self._failures - 1, 20))
            self._retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
            if self._failures == 1:
                log.warning(
                    "sidecar.client: %s unreachable (%s); buffering up to %d events and retrying", self.target, result.detail, self.max_buffer
                )
            return
        if n:
            self._pending = None
        if self._failures:
            log.info("sidecar.client: %s reachable again after %d attempt(s)", self.target, self._failures)
            self._failures = 0
        self.sent += result.confirmed
        if result.rejected:
            self._drop("rejected", result.rejected)
            self._warn_once("rejected:" + result.detail, "sidecar.client: the sidecar rejected %d event(s): %s", result.rejected, result.detail)
        if status == REFUSED:
            self._drop("refused", n)
            self._warn_once("refused:" + result.detail, "sidecar.client: the sidecar refused a batch of %d: %s", n, result.detail)
        elif status == UNCONFIRMED:
            self.unconfirmed += result.unconfirmed
            log.warning(
                "sidecar.client: connection to %s broke; up to %d event(s) sent on it may be lost (%s)", self.target, result.unconfirmed, result.detail
            )


@atexit.register
def _close_all() -> None:
    for emitter in list(_live):
        emitter.close(timeout=2.0)


def _after_fork() -> None:
    # The child has no flusher thread, must not send the parent's queued events twice, nor
    # write into the parent's connection; its counts start from zero.
    for emitter in list(_live):
        emitter._init_threading()
        emitter._transport.after_fork()
        emitter.sent = emitter.unconfirmed = 0
        emitter.drops = {}
        if emitter._state is _RUNNING:
            emitter._state = _NEW


os.register_at_fork(after_in_child=_after_fork)
