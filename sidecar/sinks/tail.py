"""The live-tail hub: a sink that hands each event to the WebSocket clients that asked for it.

    pipeline --consume(batch)--> TailHub --deque per client--> one writer pass per loop turn --> socket

`consume` never awaits: it matches each event against the subscriptions and
appends the event's bytes (as sent, plus `received_at`) to each matching
client's own bounded deque; a full deque drops its oldest and counts it. The
clients with something to send are listed, and one callback per loop turn (the
writer pass) writes each one's waiting events as a ready WebSocket text frame
straight to its transport (several frames in one write when it is behind): no task
per client, no ASGI send, no str round trip.
A client whose transport buffer is above its high-water mark is skipped, not
waited on (its queue goes on dropping its oldest) until the transport says it
drained; so a slow reader only ever slows itself.

A connection that did not come through `api.tail_wire.TailWireProtocol` (another
server, a test double) has no wire: it gets a sender task that sends through the
ASGI `send`, as before (`TailClient.run`), under the per-turn allowance below.

Matching is indexed and per filter, not per client: clients with equal filters
share a group; a group with exact values for `agent` (or else `run_id`, `type`,
`workflow`, `model`) is filed under those values, so an event costs a dict lookup
per indexed field plus the groups that really match. Groups with only globs (or no
filter) sit on a short fallback list. Each matching group collects the batch's
events once; each of its clients then takes them with one `deque.extend`, and
clients of a group that keep up send one shared message, encoded and framed once.

Writing shares the event loop with ingest: one writer pass writes at most
WRITES_PER_PASS messages / WRITE_BYTES_PER_PASS bytes, the rest wait (in order) for
the next pass, one loop turn later, so the ingest readers get the loop between them
(ASGI senders: SENDS_PER_TURN / SEND_BYTES_PER_TURN).

What one client can cost is bounded whatever it subscribes with: a filter holds at
most MAX_GLOBS globs of at most MAX_GLOB_LENGTH characters, matched against the
label value (the first 128 characters, as /metrics shows it), so one event costs
each glob filter a bounded amount of regex work however long the sender made the
value; its queue is bounded in events and in bytes; its replies are bounded by
MAX_CONTROL, past which the route stops reading its messages until it reads ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import re
from array import array
from bisect import bisect_left
from collections import deque
from itertools import accumulate
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol, TypeAlias

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from sidecar.config import TailConfig
from sidecar.sinks.series import MAX_LABEL_LENGTH
from sidecar.types import SEVERITIES, Batch, Event, SinkDrops

log = logging.getLogger("agent_sidecar.tail")

FILTER_KEYS = ("type", "agent", "workflow", "severity", "model", "tool", "run_id")
GLOB_KEYS = frozenset({"type", "agent"})
# Preference order for the index: the most selective exact-match key first.
INDEX_KEYS = ("agent", "run_id", "type", "workflow", "tool", "model")
MAX_VALUES = 100  # values per key in one filter
MAX_VALUE_LENGTH = 256
# Globs are regexes run per event per filter: their number and length (against a value cut to
# MAX_LABEL_LENGTH) bound that work. A glob longer than the longest label value it can meet
# buys nothing.
MAX_GLOBS = 16  # per filter, all keys together
MAX_GLOB_LENGTH = MAX_LABEL_LENGTH
MAX_INTERVAL_MS = 60_000
# Replies (acks, errors) waiting for one client. At this many the route stops reading the
# client's messages until it has read our replies: no reply is ever dropped.
MAX_CONTROL = 64
MAX_MESSAGE_BYTES = (1 << 20) - 64  # leaves room for the envelope under a 1 MiB client limit
CLOSE_WAIT = 1.0  # seconds shutdown waits for close frames to be written
# Fair share with ingest: senders run on the loop that reads ingest sockets, and one loop turn
# runs every ready task once. Capping the sends in one turn means the ingest reader gets a turn
# after at most this much sending, however many clients are busy.
SENDS_PER_TURN = 16
SEND_BYTES_PER_TURN = 256 * 1024
# A direct write costs a few microseconds (the same frame for a whole group), so a pass may
# write to every client of a 1000-client hub before ingest reads again (~5 ms here).
WRITES_PER_PASS = 1024
WRITE_BYTES_PER_PASS = 1 << 20
# A client that is behind gets up to this many messages (and bytes) in one write: one system call
# instead of one per loop turn, and a whole-stream client is not held to max_batch per turn.
MESSAGES_PER_WRITE = 8
WRITE_BYTES_PER_CLIENT = 1 << 20
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_GLOB_CHARS = re.compile(r"[*?\[]")
_ASCII_DIGITS = re.compile(r"[0-9]+")
# A spliced event that failed: never sent (empty bytes is no event's splice).
_FAILED = b""

Check: TypeAlias = Callable[[Event], bool]


class FilterError(ValueError):
    """A tail filter or client message that cannot be used; the text says why."""


@dataclass(frozen=True)
class TailFilter:
    """What one client asked for. Values of one key OR together; keys AND together."""

    values: tuple[tuple[str, tuple[str, ...]], ...]  # (key, values) in FILTER_KEYS order; not severity
    min_severity: str | None = None  # hashable, so clients with equal filters share one group

    def get(self, key: str) -> tuple[str, ...] | None:
        for k, vals in self.values:
            if k == key:
                return vals
        return None

    def as_dict(self) -> dict[str, Any]:
        """The normalised filter, as echoed in the `subscribed` ack."""
        out: dict[str, Any] = {k: list(v) for k, v in self.values}
        if self.min_severity:
            out["severity"] = self.min_severity
        return out

    def index_key(self) -> tuple[str, tuple[str, ...]] | None:
        """The key (and its exact values) to file this filter under, or None for the fallback list."""
        for key in INDEX_KEYS:
            vals = self.get(key)
            if vals and not any(_GLOB_CHARS.search(v) for v in vals):
                return key, vals
        return None

    def predicate(self, skip: str | None = None) -> Check | None:
        """A function checking every condition except `skip` (already satisfied by the index);
        None when nothing is left to check."""
        checks: list[Check] = []
        for key, vals in self.values:
            if key == skip:
                continue
            if key in GLOB_KEYS and any(_GLOB_CHARS.search(v) for v in vals):
                checks.append(_glob_check(key, vals))
            else:
                checks.append(_exact_check(key, frozenset(vals)))
        if self.min_severity:
            checks.append(_severity_check(_RANK[self.min_severity]))
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]
        return lambda ev: all(check(ev) for check in checks)


def _glob_check(key: str, globs: tuple[str, ...]) -> Check:
    # Matched on the label value (cut to MAX_LABEL_LENGTH): the regex work per event is then
    # bounded by the filter's limits, not by what the sender put in the field.
    match = re.compile("|".join(f"(?:{fnmatch.translate(v)})" for v in globs)).match
    field = attrgetter(key)
    return lambda ev: match((field(ev) or "")[:MAX_LABEL_LENGTH]) is not None


def _exact_check(key: str, allowed: frozenset[str]) -> Check:
    field = attrgetter(key)
    return lambda ev: field(ev) in allowed


def _severity_check(floor: int) -> Check:
    return lambda ev: _RANK[ev.severity or "info"] >= floor


def parse_filter(items: Iterable[tuple[str, Any]]) -> TailFilter:
    """Build a filter from (key, value) pairs: a query string's items, or a JSON object's items
    where a value may be a string or a list of strings. Raises FilterError naming the problem."""
    values: dict[str, list[str]] = {}
    globs = 0
    for key, value in items:
        if key not in FILTER_KEYS:
            raise FilterError(f"unknown filter key {key!r} (expected one of: {', '.join(FILTER_KEYS)})")
        given = value if isinstance(value, list) else [value]
        for v in given:
            if not isinstance(v, str) or not v:
                raise FilterError(f"filter {key}: values must be non-empty strings, not {v!r}")
            if len(v) > MAX_VALUE_LENGTH:
                raise FilterError(f"filter {key}: a value is longer than {MAX_VALUE_LENGTH} characters")
            bucket = values.setdefault(key, [])
            if v in bucket:
                continue
            bucket.append(v)
            if key in GLOB_KEYS and _GLOB_CHARS.search(v):
                if len(v) > MAX_GLOB_LENGTH:
                    raise FilterError(f"filter {key}: a glob is longer than {MAX_GLOB_LENGTH} characters (globs match the first {MAX_LABEL_LENGTH} characters of a value)")
                globs += 1
                if globs > MAX_GLOBS:
                    raise FilterError(f"filter: at most {MAX_GLOBS} globs (values with * ? or [) in one filter")
        if len(values.get(key, ())) > MAX_VALUES:
            raise FilterError(f"filter {key}: at most {MAX_VALUES} values")
    min_severity = None
    severities = values.pop("severity", None)
    if severities:
        unknown = [s for s in severities if s not in _RANK]
        if unknown:
            raise FilterError(f"filter severity: {unknown[0]!r} is not one of {', '.join(SEVERITIES)}")
        min_severity = min(severities, key=_RANK.__getitem__)  # OR of "x and above" = the lowest
    return TailFilter(tuple((k, tuple(values[k])) for k in FILTER_KEYS if values.get(k)), min_severity)


def parse_interval(value: Any) -> float:
    """`interval_ms` (0..60000) as seconds. A string must be ASCII digits: `int()` also takes
    other scripts' digits and `str.isdigit()` is true for ones `int()` refuses ("²")."""
    if isinstance(value, str) and _ASCII_DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INTERVAL_MS:
        raise FilterError(f"interval_ms must be an integer from 0 to {MAX_INTERVAL_MS}, not {value!r}")
    return value / 1000.0


class Transport(Protocol):
    """What a client's sender needs from its WebSocket (Starlette's WebSocket fits)."""

    async def send(self, message: MutableMapping[str, Any]) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class Wire(Protocol):
    """A connection's socket, for writing ready frames (`api.tail_wire.TailWireProtocol`)."""

    on_writable: Callable[[], None] | None  # set by the hub: called when a full buffer drained
    write_paused: bool  # the buffer is above its high-water mark: skip, do not wait

    def is_open(self) -> bool: ...

    def write_frame(self, frame: bytes) -> None: ...

    def write_frames(self, frames: list[bytes]) -> None: ...


def text_frame(payload: bytes) -> bytes:
    """`payload` (valid UTF-8) as one unmasked, final WebSocket text frame (RFC 6455 5.2):
    what a server sends. The events were UTF-8-checked when they were decoded."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


_encode = msgspec.json.encode


def _decode_message(text: str | bytes) -> dict[str, Any]:
    """A client message as a JSON object. Duplicate keys are refused at any depth: decoders
    silently keep the last one, so `{"agent": "a", "agent": "b"}` would quietly mean "b"."""
    try:
        msg = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, FilterError):
            raise
        raise FilterError("message must be a JSON object") from None
    if not isinstance(msg, dict):
        raise FilterError("message must be a JSON object")
    return msg


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FilterError(f"duplicate key {key!r} in the message (give several values as a list)")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise FilterError(f"{name} is not JSON")


class TailClient:
    """One subscriber: its filter, its bounded queue of encoded events, and its sender task."""

    __slots__ = (
        "hub", "ws", "wire", "filter", "group", "queue", "segments", "queued_bytes", "dropped", "control", "room",
        "paused", "interval", "wakeup", "sender", "last", "timer", "_loop",
    )

    def __init__(self, hub: TailHub, ws: Transport, tail_filter: TailFilter, interval: float, wire: Wire | None = None):
        self.hub = hub
        self.ws = ws
        self.wire = wire  # None: sent through `ws` by a sender task
        self.filter = tail_filter
        self.group: _Group | None = None
        # Bounded by tail.client_queue events (the deque evicts) and tail.client_queue_bytes (`offer`).
        self.queue: deque[bytes] = deque(maxlen=hub.config.client_queue)
        # The queue's bytes, without touching its events again (that is a cache miss each): the
        # queue is runs of batches, each [sizes, lo, hi] = its events lo..hi-1 still queued, with
        # `sizes` the batch's running byte totals, computed once per group while they are hot.
        self.segments: deque[list[Any]] = deque()
        self.queued_bytes = 0
        self.dropped = 0  # dropped since the last message; reported in the next one
        self.control: deque[bytes] = deque()
        self.room = asyncio.Event()  # set while fewer than MAX_CONTROL replies wait
        self.room.set()
        self.paused = False
        self.interval = interval
        self.wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.sender: asyncio.Task[None] | None = None
        self.last = 0.0  # when the last message went out (interval_ms)
        self.timer: asyncio.TimerHandle | None = None  # interval_ms: the next message's turn

    def kick(self) -> None:
        """Something to send: list it for the next writer pass (or wake its sender)."""
        if self.wire is None:
            self.wakeup.set()
        else:
            self.hub.schedule(self)

    def reply(self, message: dict[str, Any]) -> None:
        """Queue a control reply; it goes out after the events already queued (up to one write:
        MESSAGES_PER_WRITE messages of max_batch events, WRITE_BYTES_PER_CLIENT bytes).
        Never dropped: at MAX_CONTROL waiting, `room` clears and the route reads no more
        messages from this client until it has read our replies."""
        self.control.append(_encode(message))
        if len(self.control) >= MAX_CONTROL:
            self.room.clear()
        self.kick()

    def offer(self, items: list[bytes], sizes: array[int]) -> int:
        """Queue a batch's matching events (`sizes`: their running byte totals from 0); evict
        the oldest beyond the count or byte bound, always keeping the newest. Returns how
        many were evicted."""
        queue = self.queue
        n = len(items)
        self.segments.append([sizes, 0, n])
        self.queued_bytes += sizes[n]
        limit = queue.maxlen  # the client_queue it connected with: a reload changes new clients' only
        assert limit is not None
        evicted = len(queue) + n - limit
        if evicted > 0:
            self.release(evicted)  # the deque evicts them itself, in C
        else:
            evicted = 0
        queue.extend(items)
        excess = self.queued_bytes - self.hub.config.client_queue_bytes
        if excess > 0:  # large events: the byte bound binds before the count
            over = self._count_bytes(excess, len(queue) - 1)
            self.release(over)
            popleft = queue.popleft
            for _ in range(over):
                popleft()
            evicted += over
        self.dropped += evicted
        return evicted

    def release(self, k: int) -> None:
        """The `k` oldest events have left the queue: take their bytes off the count."""
        segments = self.segments
        freed = 0
        while k:
            segment = segments[0]
            sizes, lo, hi = segment
            took = min(k, hi - lo)
            freed += sizes[lo + took] - sizes[lo]
            if lo + took == hi:
                segments.popleft()
            else:
                segment[1] = lo + took
            k -= took
        self.queued_bytes -= freed

    def _count_bytes(self, excess: int, most: int) -> int:
        """How many of the oldest events hold at least `excess` bytes (at most `most`)."""
        count = 0
        for sizes, lo, hi in self.segments:
            held = sizes[hi] - sizes[lo]
            if held < excess:
                excess -= held
                count += hi - lo
            else:
                count += bisect_left(sizes, sizes[lo] + excess, lo, hi) - lo
                break
            if count >= most:
                break
        return min(count, most)

    def clear(self) -> None:
        """Forget the queued events (a new filter: they matched the old one)."""
        self.queue.clear()
        self.segments.clear()
        self.queued_bytes = 0

    def _encode(self, events: list[bytes], dropped: int) -> tuple[bytes, int]:
        """One message (UTF-8 JSON) from the first events that fit in MAX_MESSAGE_BYTES, and how
        many it holds. Clients of a group that keep up send the same events: encoded once."""
        group = self.group
        cache = group.cache if group is not None else None
        if not dropped and cache is not None and cache[0] is events[0] and cache[1] == len(events):
            return cache[2], cache[3]  # a client's queue is a contiguous run of its group's stream
        joined = b",".join(events)
        used = len(events)
        if len(joined) > MAX_MESSAGE_BYTES and used > 1:  # rare: big events
            used = _fit(events)
            joined = b",".join(events[:used])
        message = b'{"events":[' + joined + b'],"dropped":' + str(dropped).encode() + b"}"
        if not dropped and group is not None:
            group.cache = (events[0], len(events), message, used)
            group.frame = None
        return message, used

    def _frame(self, events: list[bytes], dropped: int) -> tuple[bytes, int]:
        """`_encode`'s message as a ready text frame: framed once per group message too."""
        message, used = self._encode(events, dropped)
        group = self.group
        if group is None or group.cache is None or group.cache[2] is not message:
            return text_frame(message), used
        if group.frame is None:
            group.frame = text_frame(message)
        return group.frame, used

    def write(self, wire: Wire, now: float) -> tuple[int, int]:
        """The writer pass's turn for this client: its next messages (each up to max_batch
        events; several when it is behind, up to MESSAGES_PER_WRITE / WRITE_BYTES_PER_CLIENT),
        then its replies, all in one write to the socket. Returns (messages, bytes) written.
        Leaves the client listed for the next pass when events remain."""
        if wire.write_paused or not wire.is_open():
            return 0, 0  # not read: skipped; `on_writable` lists it again when the buffer drains
        queue = self.queue
        group = self.group
        if queue and not (self.paused or self.dropped or self.interval or self.control) and group is not None:
            # Caught up (the common case at 1,000 clients): its queue is the group's last message,
            # already framed; write that, without taking, releasing or framing per client.
            cache, frame = group.cache, group.frame
            if frame is not None and cache is not None and len(queue) == cache[1] == cache[3] <= self.hub.config.max_batch and queue[0] is cache[0]:
                queue.clear()
                self.segments.clear()
                self.queued_bytes = 0
                wire.write_frame(frame)
                return 1, len(frame)
        frames: list[bytes] = []
        written = 0
        if queue and not self.paused:
            due = self.last + self.interval - now if self.interval else 0.0
            if due > 0:
                if self.timer is None:  # coalesce: whatever arrives meanwhile joins
                    self.timer = self._loop.call_later(due, self._due)
            else:
                self.last = now
                written = self._messages(frames, self.hub.config.max_batch)
                if queue:
                    self.hub.schedule(self)  # more than this write may hold: the rest in the next pass
        control = self.control
        while control:
            frame = text_frame(control.popleft())
            frames.append(frame)
            written += len(frame)
        if not self.room.is_set():
            self.room.set()
        if len(frames) == 1:
            wire.write_frame(frames[0])
        elif frames:
            wire.write_frames(frames)
        return len(frames), written

    def _messages(self, frames: list[bytes], max_batch: int) -> int:
        """Frame the queue's oldest events as messages of at most max_batch events, appended
        to `frames`: one, or while it is behind (more queued than one message holds) several,
        so that a client that fell behind catches up in one system call rather than one per
        loop turn. One only with interval_ms. Returns the bytes framed."""
        queue = self.queue
        written = 0
        for _ in range(1 if self.interval else MESSAGES_PER_WRITE):
            events = _take(queue, max_batch)
            dropped, self.dropped = self.dropped, 0
            frame, used = self._frame(events, dropped)
            if used < len(events):
                queue.extendleft(reversed(events[used:]))  # room: they were just taken out
            self.release(used)
            frames.append(frame)
            written += len(frame)
            if not queue or written >= WRITE_BYTES_PER_CLIENT:
                break
        return written

    def _due(self) -> None:
        self.timer = None
        self.hub.schedule(self)

    async def run(self) -> None:
        """The sender: wait for something to send, send it, repeat until the socket fails."""
        ws = self.ws
        queue = self.queue
        control = self.control
        turns = self.hub.turns
        max_batch = self.hub.config.max_batch
        wake = self.wakeup
        last = 0.0
        try:
            while True:
                await wake.wait()
                wake.clear()
                while True:
                    # One batch of events, then the replies: a reply follows the events queued
                    # before it (up to max_batch) and is never starved by a flood.
                    sent = False
                    if queue and not self.paused:
                        if self.interval:
                            delay = last + self.interval - self._loop.time()
                            if delay > 0:
                                await asyncio.sleep(delay)  # coalesce: whatever arrives meanwhile joins
                                continue  # re-check: a subscribe or pause may have come meanwhile
                        if not turns.take():
                            await turns.wait()  # this turn's sending is used up: ingest goes first
                            if not queue or self.paused:
                                continue  # a subscribe or pause came meanwhile
                        events = _take(queue, max_batch)
                        dropped, self.dropped = self.dropped, 0
                        last = self._loop.time()
                        message, used = self._encode(events, dropped)
                        if used < len(events):
                            queue.extendleft(reversed(events[used:]))  # room: they were just taken out
                        self.release(used)
                        turns.spend(len(message))
                        await ws.send({"type": "websocket.send", "text": message.decode()})
                        sent = True
                    while control:
                        await ws.send({"type": "websocket.send", "text": control.popleft().decode()})
                        if len(control) < MAX_CONTROL:
                            self.room.set()
                        sent = True
                    if not sent:
                        break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-send; the route's receive loop sees it too
            log.debug("tail sender stopped: %r", exc)
        finally:
            self.room.set()  # nobody will send the replies now: let the route read on (and see the close)


class _Turns:
    """How much the senders may still send in this loop turn; who waits for the next one.

    A turn's allowance is reset by a callback scheduled for the next turn, which runs after
    the loop has polled the sockets, so ingest reads interleave with sending. Waiting
    senders are released in arrival order (the allowance is handed to them first)."""

    __slots__ = ("sends", "bytes", "left", "bytes_left", "waiting", "armed")

    def __init__(self, sends: int, nbytes: int):
        self.sends, self.bytes = sends, nbytes
        self.left, self.bytes_left = sends, nbytes
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.armed = False

    def take(self) -> bool:
        """Claim one message in this turn, if there is room and nobody is waiting."""
        if self.left > 0 and self.bytes_left > 0 and not self.waiting:
            self.left -= 1
            self._arm()
            return True
        return False

    def spend(self, nbytes: int) -> None:
        self.bytes_left -= nbytes

    async def wait(self) -> None:
        """Wait for a later turn; on return one message of that turn is claimed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self._arm()
        await future

    def _arm(self) -> None:
        if not self.armed:
            self.armed = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self.armed = False
        self.left, self.bytes_left = self.sends, self.bytes
        waiting = self.waiting
        while waiting and self.left > 0:
            future = waiting.popleft()
            if not future.done():  # a cancelled sender's
                future.set_result(None)
                self.left -= 1
        if waiting:
            self._arm()


class _Group:
    """The clients sharing one filter: matched once per event, fed once per batch."""

    __slots__ = ("filter", "clients", "check", "indexed", "cache", "frame")

    def __init__(self, tail_filter: TailFilter):
        self.filter = tail_filter
        self.clients: dict[TailClient, None] = {}
        self.indexed = tail_filter.index_key()
        # What the index has not already checked; None when the index lookup says it all.
        self.check = tail_filter.predicate(skip=self.indexed[0] if self.indexed else None)
        # The last message encoded: (first event, events taken, message, events it holds),
        # and that message as a text frame once a wire client has asked for it.
        self.cache: tuple[bytes, int, bytes, int] | None = None
        self.frame: bytes | None = None


class TailHub:
    """The tail sink. Route handlers `connect`/`disconnect` clients and pass their messages to
    `handle`; the pipeline calls `consume`. All of it runs on the event loop, so no locks."""

    name = "tail"

    def __init__(self, config: TailConfig, registry: CollectorRegistry | None = None):
        self.config = config
        self.turns = _Turns(SENDS_PER_TURN, SEND_BYTES_PER_TURN)
        self.clients: dict[TailClient, None] = {}
        self._groups: dict[TailFilter, _Group] = {}
        self._index: dict[str, dict[str, dict[_Group, None]]] = {}
        self._index_items: list[tuple[str, dict[str, dict[_Group, None]]]] = []
        self._fallback: dict[_Group, None] = {}
        self.closing = False
        self._empty = asyncio.Event()
        self._pending: dict[TailClient, None] = {}  # wire clients with something to write
        self._pass_armed = False
        self.dropped_total = Counter(
            "sidecar_tail_dropped", "Events a live-tail client missed because its queue (tail.client_queue) was full.",
            registry=registry,
        )
        self.clients_gauge = Gauge("sidecar_tail_clients", "Connected live-tail WebSocket clients.", registry=registry)
        self.clients_gauge.set_function(lambda: len(self.clients))

    # -- clients (route handlers) ---------------------------------------------

    @property
    def full(self) -> bool:
        return len(self.clients) >= self.config.max_clients

    def connect(self, ws: Transport, tail_filter: TailFilter, interval: float = 0.0, wire: Wire | None = None) -> TailClient:
        """Register a client: written to by the writer pass when it has a `wire`, else by a
        sender task of its own through `ws`."""
        client = TailClient(self, ws, tail_filter, interval, wire)
        self.clients[client] = None
        self._empty.clear()
        self._file(client)
        if wire is None:
            client.sender = asyncio.create_task(client.run(), name="tail-sender")
        else:
            wire.on_writable = client.kick
        return client

    async def disconnect(self, client: TailClient) -> None:
        """Forget a client and stop its sender."""
        if client in self.clients:
            del self.clients[client]
            self._unfile(client)
        self._pending.pop(client, None)
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        if client.wire is not None:
            client.wire.on_writable = None
        if client.sender is not None:
            client.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client.sender
        if not self.clients:
            self._empty.set()

    def handle(self, client: TailClient, text: str | bytes) -> None:
        """Apply one message from a client; a bad one gets an error reply, never a disconnect."""
        try:
            msg = _decode_message(text)
        except FilterError as exc:
            client.reply({"op": "error", "error": str(exc)})
            return
        op = msg.get("op")
        try:
            if op == "subscribe":
                raw_filter = msg.get("filter", {})
                if not isinstance(raw_filter, dict):
                    raise FilterError("filter must be a JSON object")
                new_filter = parse_filter(raw_filter.items())
                interval = parse_interval(msg["interval_ms"]) if "interval_ms" in msg else client.interval
                self._unfile(client)
                client.filter = new_filter
                client.interval = interval
                client.clear()  # queued events matched the old filter
                self._file(client)
                ack: dict[str, Any] = {"op": "subscribed", "filter": new_filter.as_dict()}
                if interval:
                    ack["interval_ms"] = round(interval * 1000)
                client.reply(ack)
            elif op == "pause":
                client.paused = True
                client.reply({"op": "paused"})
            elif op == "resume":
                client.paused = False
                client.reply({"op": "resumed"})
            else:
                raise FilterError(f"unknown op {op!r} (expected subscribe, pause or resume)")
        except FilterError as exc:
            client.reply({"op": "error", "error": str(exc)})

    def _file(self, client: TailClient) -> None:
        group = self._groups.get(client.filter)
        if group is None:
            group = self._groups[client.filter] = _Group(client.filter)
            if group.indexed is None:
                self._fallback[group] = None
            else:
                field, values = group.indexed
                by_value = self._index.setdefault(field, {})
                for v in values:
                    by_value.setdefault(v, {})[group] = None
                self._index_items = list(self._index.items())
        group.clients[client] = None
        client.group = group

    def _unfile(self, client: TailClient) -> None:
        group = self._groups[client.filter]
        del group.clients[client]
        if group.clients:
            return
        del self._groups[client.filter]
        if group.indexed is None:
            del self._fallback[group]
            return
        field, values = group.indexed
        by_value = self._index[field]
        for v in values:
            bucket = by_value[v]
            del bucket[group]
            if not bucket:
                del by_value[v]
        if not by_value:
            del self._index[field]
        self._index_items = list(self._index.items())

    # -- the hot path (pipeline task) -----------------------------------------

    def consume(self, batch: Batch) -> SinkDrops | None:
        """Queue each event for the clients whose filters it matches. An event whose bytes
        cannot be prepared is left out (and returned, so the pipeline does not count it as
        processed); the rest of the batch still reaches every client."""
        if not self.clients:
            return None
        events = batch.events
        n = len(events)
        # Which events each group wants, as positions: first through the index (events grouped
        # by value, one dict lookup per distinct value), then the fallback groups.
        wanted: dict[_Group, list[int]] = {}
        for field, by_value in self._index_items:
            positions: dict[Any, list[int]] = {}
            for i, value in enumerate(map(attrgetter(field), events)):
                at = positions.get(value)
                if at is None:
                    positions[value] = [i]
                else:
                    at.append(i)
            for value, at in positions.items():
                bucket = by_value.get(value)
                if bucket:
                    for group in bucket:
                        _want(wanted, group, at, events)
        everything = range(n)
        for group in self._fallback:
            _want(wanted, group, everything, events)
        # Each event's bytes as sent + received_at, built once however many groups want it.
        raws = batch.raws
        received_at = batch.received_at
        suffix = b',"received_at":' + repr(received_at).encode() + b"}"
        spliced: list[bytes | None] = [None] * n
        failed: SinkDrops = {}
        matched: dict[_Group, tuple[list[bytes], array[int]]] = {}
        for group, at in wanted.items():
            if not at:
                continue
            if group.indexed is not None and len(group.indexed[1]) > 1:
                at.sort()  # gathered value by value; deliver in arrival order
            items: list[bytes] = []
            for i in at:
                item = spliced[i]
                if item is None:
                    item = spliced[i] = self._splice(raws[i], suffix, received_at, i, failed)
                if item:  # not _FAILED
                    items.append(item)
            if items:
                matched[group] = items, array("q", accumulate(map(len, items), initial=0))
        # Per client, one C-level extend per batch: the per-event work above is per filter.
        dropped = 0
        pending = self._pending  # `kick`, inlined: this loop runs once per client per batch
        for group, (items, sizes) in matched.items():
            for client in group.clients:
                dropped += client.offer(items, sizes)
                if not client.paused:
                    if client.wire is None:
                        client.wakeup.set()
                    else:
                        pending[client] = None
        if pending and not self._pass_armed:
            self._pass_armed = True
            asyncio.get_running_loop().call_soon(self._write_pass)
        if dropped:
            self.dropped_total.inc(dropped)
        return failed or None

    @staticmethod
    def _splice(raw: bytes, suffix: bytes, received_at: float, i: int, failed: SinkDrops) -> bytes:
        """The event as sent plus received_at, or _FAILED (recorded in `failed`): one event
        that cannot be spliced must not cost its batch."""
        try:
            return _with_received_at(raw, suffix, received_at)
        except Exception as exc:
            if not failed:  # once per batch: a stream of them must not flood the log
                log.warning("live tail left out an event it could not splice received_at into: %r", exc)
            failed[i] = "splice_failed"
            return _FAILED

    def schedule(self, client: TailClient) -> None:
        """List a wire client for the next writer pass."""
        self._pending[client] = None
        if not self._pass_armed:
            self._pass_armed = True
            asyncio.get_running_loop().call_soon(self._write_pass)

    def _write_pass(self) -> None:
        """Write to every listed client, up to this pass's allowance; the rest go first in the
        next pass (one loop turn later, after the loop has read the sockets)."""
        self._pass_armed = False
        if self.closing:
            self._pending.clear()
            return
        pending, self._pending = self._pending, {}
        messages, budget = WRITES_PER_PASS, WRITE_BYTES_PER_PASS
        now = asyncio.get_running_loop().time()
        clients = iter(pending)
        for client in clients:
            if messages <= 0 or budget <= 0:
                rest = {client: None}
                rest.update(dict.fromkeys(clients))
                rest.update(self._pending)
                self._pending = rest
                self._pass_armed = True
                asyncio.get_running_loop().call_soon(self._write_pass)
                return
            wire = client.wire
            if wire is None or client not in self.clients:
                continue
            try:
                sent, nbytes = client.write(wire, now)
            except Exception as exc:  # a transport that fails a write is closing: the route sees it
                log.debug("tail write failed: %r", exc)
                continue
            messages -= sent
            budget -= nbytes

    async def start(self) -> None:
        pass  # sender tasks start with their clients; the writer pass with the first write

    def maintain(self, now: float) -> None:
        pass  # keepalive is the WebSocket server's (ping/pong); nothing expires here

    def reconfigure(self, config: TailConfig) -> None:
        """Apply reloaded limits: max_clients from the next handshake; a client's queue size and
        batch size are set when it connects (connected clients keep theirs)."""
        self.config = config

    # -- shutdown ---------------------------------------------------------------

    async def begin_shutdown(self) -> None:
        """Close every client with 1001 (going away). Called when server shutdown *starts*,
        before uvicorn waits for open connections, so tail clients never hold shutdown up."""
        self.closing = True
        clients = list(self.clients)
        if not clients:
            return
        log.info("closing %d live-tail client(s) with 1001", len(clients))
        self._pending.clear()
        for client in clients:
            if client.sender is not None:
                client.sender.cancel()
            if client.timer is not None:
                client.timer.cancel()
                client.timer = None
            client.room.set()  # a route waiting for reply room reads on and sees the close
        closes = [asyncio.create_task(_close(c.ws, 1001, "sidecar shutting down")) for c in clients]
        # A client that never reads may have a full send buffer: its close waits on it; don't.
        # Its connection is left to uvicorn, which gives up on it after shutdown_grace.
        _, pending = await asyncio.wait(closes, timeout=CLOSE_WAIT)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d live-tail client(s) read nothing; their close frames could not be sent", len(pending))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), CLOSE_WAIT)  # handlers see the close at once

    async def close(self) -> None:
        """Lifespan shutdown: stop any sender still running."""
        self.closing = True
        for client in list(self.clients):
            await self.disconnect(client)


def _want(wanted: dict[_Group, list[int]], group: _Group, positions: Iterable[int], events: list[Event]) -> None:
    check = group.check
    at = wanted.get(group)
    if at is None:
        at = wanted[group] = []
    if check is None:
        at.extend(positions)
    else:
        at.extend(i for i in positions if check(events[i]))


def _take(queue: deque[bytes], max_batch: int) -> list[bytes]:
    """The oldest `max_batch` events (or all)."""
    if len(queue) <= max_batch:
        events = list(queue)
        queue.clear()
        return events
    popleft = queue.popleft
    return [popleft() for _ in range(max_batch)]


def _fit(events: list[bytes]) -> int:
    """How many of `events` fit in MAX_MESSAGE_BYTES (at least one: a big event goes alone)."""
    total = 0
    for n, item in enumerate(events):
        total += len(item) + 1
        if total > MAX_MESSAGE_BYTES and n:
            return n
    return len(events)


async def _close(ws: Transport, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code, reason)


_decode_members = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


def _with_received_at(raw: bytes, suffix: bytes, received_at: float) -> bytes:
    """The event's bytes as sent with `"received_at":...` spliced in before the closing brace.
    `raw` decoded as a JSON object with at least `type`, so the splice is valid JSON.

    When the sender set `received_at` itself it is replaced, not duplicated. The key may be
    spelled with escapes (`"received\\u005fat"`), so any `\\u` means looking at the keys.
    Only the top-level members are decoded (values stay raw bytes): decoding the whole event
    would refuse what the event decoder accepted without looking, such as `1e999` in a payload."""
    if b'"received_at"' in raw or b"\\u" in raw:
        members = _decode_members(raw)
        if "received_at" in members:
            del members["received_at"]
            members["received_at"] = msgspec.Raw(repr(received_at).encode())
            return _encode(members)
    return raw[: raw.rindex(b"}")] + suffix
