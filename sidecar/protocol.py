"""Bytes in, events out. No I/O: the listeners, the tests and the client SDK share it.

`LineFramer` splits a byte stream into lines with a length limit; `EventDecoder`
turns lines (or HTTP body items) into validated, normalised `Event`s and
`Rejection`s whose `reason` is the label of `sidecar_events_rejected_total`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from sidecar import contract
from sidecar.contract import MAX_TYPE_LENGTH, TYPE_PATTERN, TYPE_RULE, is_failure_type, valid_type
from sidecar.types import Event, Rejection

if TYPE_CHECKING:  # protocol.py stays importable without the server's packages; the app passes a Pricer in
    from sidecar.pricing import Pricer

__all__ = ["MAX_TYPE_LENGTH", "REASONS", "TYPE_PATTERN", "EventDecoder", "LineFramer", "is_failure_type", "valid_type"]

# Every reason a line can be rejected for; the label values of sidecar_events_rejected_total.
REASONS = (
    "invalid_json",
    "invalid_utf8",
    "not_object",
    "missing_type",
    "invalid_type",
    "invalid_field",
    "out_of_range",
    "bad_timestamp",
    "future_timestamp",
    "too_large",
    "bad_encoding",
)


class LineFramer:
    """Splits a stream into lines; lines longer than `max_bytes` are skipped up to their newline.

    Feed it whatever `read()` returned. Blank lines are ignored. `finish()` returns the
    unterminated tail when the peer disconnects mid-line (it is decoded like any line).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._rest = b""
        self._discarding = False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Return the complete lines in `data` and how many oversized lines were dropped."""
        oversized = 0
        if self._discarding:
            cut = data.find(b"\n")
            if cut < 0:
                return [], 0
            data = data[cut + 1 :]
            self._discarding = False
        lines = data.split(b"\n")
        if self._rest:  # the line cut by the previous read: joined alone, not the whole read copied
            lines[0] = self._rest + lines[0]
        rest = lines.pop()
        if len(rest) > self.max_bytes:
            oversized += 1
            self._discarding = True
            rest = b""
        self._rest = rest
        limit = self.max_bytes
        if self._all_short(data, lines) and b"" not in lines and not any(map(bytes.isspace, lines)):
            return lines, oversized  # the usual read: every line an item, checked in C
        out = []
        for line in lines:
            if len(line) > limit:
                oversized += 1
            elif line and not line.isspace():
                out.append(line)
        return out, oversized

    def _all_short(self, data: bytes, lines: list[bytes]) -> bool:
        """No line is over max_bytes. A line inside `data` that is over it holds a whole aligned
        block of max_bytes / 2 bytes with no newline, so a newline found in every block proves
        them all short: a few memchr calls per read, not a len() per line (40 ns per event)."""
        limit = self.max_bytes
        half = limit // 2
        if half >= _BLOCK_SCAN_MIN and (not lines or len(lines[0]) <= limit):  # the first may hold the last read's rest
            find = data.find
            if all(find(b"\n", start, start + half) >= 0 for start in range(0, data.rfind(b"\n"), half)):
                return True
        return max(map(len, lines), default=0) <= limit

    def finish(self) -> bytes:
        """The unterminated last line, if any (empty when it was blank or oversized)."""
        rest, self._rest = self._rest, b""
        return b"" if rest.isspace() else rest


# LineFramer proves lines short by blocks of max_bytes / 2 when blocks are at least this long;
# with smaller ones a len() per line is cheaper than a find() per block.
_BLOCK_SCAN_MIN = 4096
_UNKNOWN = object()
# Rejected lines are parsed a second time, untyped, so that the contract names the problem.
# float_hook keeps 1e999 as inf (the contract calls it out of range) instead of an error.
_parse_untyped = msgspec.json.Decoder(float_hook=float).decode
# Type names are cached only up to this length (longer ones are invalid anyway), so the
# cache holds at most _MAX_CACHED_TYPES * MAX_TYPE_LENGTH characters whatever is sent.
_MAX_CACHED_TYPES = 10_000
# Label values repeat: a fleet sends the same few dozen types, agents, workflows and models in
# every event, and msgspec makes a new str for each (it shares only dict keys). The decoder swaps
# each for the first equal one it kept, so the sinks hash each value once, compare by identity,
# and the fresh copies die at once, while still in the cache (BENCHMARKS.md: the sidecar's time
# goes mostly to cache misses over ~1 KB of objects per event). Kept: values of at most
# MAX_SHARED_LENGTH characters (label values are cut to 128 anyway), at most MAX_SHARED of them;
# past that the table starts again.
MAX_SHARED = 10_000
MAX_SHARED_LENGTH = 128


def classify(line: bytes, exc: msgspec.ValidationError) -> Rejection:
    """Why the typed decode refused `line`, decided by the contract, not by msgspec's wording."""
    try:
        found = contract.check_at(_parse_untyped(line))
    except msgspec.DecodeError as err:  # the typed decode stopped before the syntax error
        return Rejection(0, "invalid_json", str(err))
    except (msgspec.ValidationError, RecursionError):
        return Rejection(0, "invalid_json", "JSON is nested too deeply")
    if found is None:
        # The contract and the Struct built from it disagree: a bug, but never an accepted
        # event the sinks cannot hold. msgspec's message is the best description we have.
        return Rejection(0, "invalid_field", str(exc))
    reason, message, path = found
    return Rejection(0, reason, f"{message} - at `{path}`")


class EventDecoder:
    """Decodes and normalises events. One instance per sidecar; it caches per-type facts."""

    def __init__(self, max_clock_skew: float = 300.0, pricer: Pricer | None = None):
        self.max_clock_skew = max_clock_skew
        self.pricer = pricer  # fills in cost_usd from the price table (sidecar/pricing.py)
        self._decode: Callable[[bytes], Event] = msgspec.json.Decoder(Event).decode
        # type -> "is a *.failed type", or None when the name is invalid. Bounded: see _type_info.
        self._types: dict[str, bool | None] = {}
        self._shared: dict[str | None, str | None] = {}  # label value -> the copy events carry

    def _type_info(self, event_type: str) -> bool | None:
        info = is_failure_type(event_type) if valid_type(event_type) else None
        if len(event_type) <= MAX_TYPE_LENGTH and len(self._types) < _MAX_CACHED_TYPES:
            self._types[event_type] = info
        return info

    def decode(
        self, lines: Iterable[bytes], received_at: float, *, price: bool = True
    ) -> tuple[list[Event], list[bytes], list[Rejection]]:
        """Decode each line (or body item) into an event, or a rejection with its index.
        `price=False` for a listener that priced its events already (OTLP, which knows the provider).

        The usual batch (every line an ASCII event of a known type, stamped within the clock
        rules) is checked and filled in bulk; any other goes line by line, which names each
        problem, reusing the parse when every line parsed."""
        if not isinstance(lines, list):
            lines = list(lines)
        parsed = self._parse_all(lines)
        rejected: list[Rejection]
        if parsed is not None and self._usual(parsed, received_at):
            events, raws, rejected = parsed, lines, []
        else:
            events, raws, rejected = self._decode_each(lines, received_at, parsed)
        self._share(events)
        if price and self.pricer is not None:
            self.pricer.fill_events(events)
        return events, raws, rejected

    def _share(self, events: list[Event]) -> None:
        """Give each event the kept copy of its type, agent, workflow and model (see MAX_SHARED)."""
        shared = self._shared
        before = len(shared)
        keep = shared.setdefault  # None is a key too: no test per field
        for ev in events:
            ev.type = keep(ev.type, ev.type)  # type: ignore[assignment]  # a str key keeps a str
            ev.agent = keep(ev.agent, ev.agent)
            ev.workflow = keep(ev.workflow, ev.workflow)
            ev.model = keep(ev.model, ev.model)
        if len(shared) != before:  # new values, the last ones in the dict's order
            for value in list(itertools.islice(reversed(shared), len(shared) - before)):
                if value is not None and len(value) > MAX_SHARED_LENGTH:
                    del shared[value]
            if len(shared) > MAX_SHARED:
                shared.clear()

    def _parse_all(self, lines: list[bytes]) -> list[Event] | None:
        """Every line parsed in one pass of C, or None when one is not ASCII or not an event."""
        if not all(map(bytes.isascii, lines)):  # msgspec does not check UTF-8 inside fields it skips
            return None
        try:
            return list(map(self._decode, lines))
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return None

    def _usual(self, events: list[Event], received_at: float) -> bool:
        """Fill in severity and success and say True when every event is of a known type and
        stamped (as epoch seconds) within the clock rules; else change nothing and say False."""
        failed = list(map(self._types.get, [ev.type for ev in events]))
        if failed.count(True) + failed.count(False) != len(failed):  # a type not seen yet, or invalid
            return False
        stamps: list[float] = [ev.timestamp for ev in events]  # type: ignore[misc]  # anything else raises TypeError below
        try:
            if stamps and not (0 <= min(stamps) and max(stamps) <= received_at + self.max_clock_skew):
                return False
        except TypeError:  # None (stamped on receipt) or a datetime (converted): line by line
            return False
        for ev, fails in zip(events, failed):
            if ev.severity is None:
                ev.severity = "error" if fails else "info"
            if ev.success is None:
                ev.success = not fails
        return True

    def _decode_each(
        self, lines: list[bytes], received_at: float, parsed: list[Event] | None
    ) -> tuple[list[Event], list[bytes], list[Rejection]]:
        decode = self._decode
        types = self._types
        type_info = self._type_info
        latest = received_at + self.max_clock_skew
        events: list[Event] = []
        raws: list[bytes] = []
        rejected: list[Rejection] = []
        for index, line in enumerate(lines):
            try:
                if parsed is not None:
                    ev = parsed[index]
                else:
                    if not line.isascii():
                        line.decode()  # msgspec does not check UTF-8 inside fields it skips
                    ev = decode(line)
            except msgspec.ValidationError as exc:
                rejected.append(classify(line, exc)._replace(index=index))
                continue
            except msgspec.DecodeError as exc:
                rejected.append(Rejection(index, "invalid_json", str(exc)))
                continue
            except UnicodeDecodeError as exc:
                rejected.append(Rejection(index, "invalid_utf8", f"invalid UTF-8 at byte {exc.start}"))
                continue
            except RecursionError:  # msgspec recurses into unknown fields too: [[[[...]]]] in a payload
                rejected.append(Rejection(index, "invalid_json", "JSON is nested too deeply"))
                continue
            failed = types.get(ev.type, _UNKNOWN)
            if failed is _UNKNOWN:
                failed = type_info(ev.type)
            if failed is None:
                rejected.append(Rejection(index, "invalid_type", TYPE_RULE))
                continue
            ts = ev.timestamp
            if ts is None:
                ev.timestamp = received_at
            else:
                if isinstance(ts, datetime):
                    ts = ev.timestamp = ts.timestamp()
                if ts > latest:
                    rejected.append(
                        Rejection(index, "future_timestamp", f"timestamp is {ts - received_at:.0f}s ahead of the sidecar's clock (max_clock_skew {self.max_clock_skew:g}s)")
                    )
                    continue
                if ts < 0:
                    rejected.append(Rejection(index, "bad_timestamp", "timestamp must not be negative"))
                    continue
            if ev.severity is None:
                ev.severity = "error" if failed else "info"
            if ev.success is None:
                ev.success = not failed
            events.append(ev)
            raws.append(line)
        return events, raws, rejected
