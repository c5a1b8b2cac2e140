"""Bytes in, events out. No I/O: the listeners, the tests and the client SDK share it.

`LineFramer` splits a byte stream into lines with a length limit (or, for the Unix listener,
hands the complete lines on unsplit as a `LineBlock`); `EventDecoder` turns lines (or HTTP
body items) into validated, normalised `Event`s and `Rejection`s whose `reason` is the label of
`sidecar_events_rejected_total`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

import msgspec
import numpy as np

from sidecar import contract
from sidecar.contract import MAX_TYPE_LENGTH, TYPE_PATTERN, TYPE_RULE, is_failure_type, valid_type
from sidecar.known_labels import KnownLabels, Literals
from sidecar.types import Event, Rejection

if TYPE_CHECKING:  # protocol.py stays importable without the server's packages; the app passes these in
    from sidecar.pricing import Pricer
    from sidecar.sinks.labelsets import LabelSets, Numbered

__all__ = ["MAX_TYPE_LENGTH", "REASONS", "TYPE_PATTERN", "EventDecoder", "LineBlock", "LineFramer", "is_failure_type", "valid_type"]

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


class LineBlock(Sequence[bytes]):
    """Complete lines as the one bytes object they came in: `data`, each line ending in a
    newline, none over the framer's limit. The decoder parses a usual block whole
    (`EventDecoder._parse_block`), so its lines are split only when one is asked for: by the
    line-by-line decode of an unusual block, or by the live tail, which reads a few of a batch's
    raw lines and most batches none."""

    __slots__ = ("_lines", "data")

    def __init__(self, data: bytes):
        self.data = data
        self._lines: list[bytes] | None = None

    def lines(self) -> list[bytes]:
        """The lines without their newlines, blank ones left out (as `LineFramer.feed` gives them)."""
        if self._lines is None:
            self._lines = self.split()
        return self._lines

    def split(self) -> list[bytes]:
        """`lines()`, not kept: a short block's lines die with its line-by-line parse."""
        lines = self.data.split(b"\n")
        lines.pop()  # what follows the last newline: nothing
        if b"" in lines or any(map(bytes.isspace, lines)):
            lines = [line for line in lines if line and not line.isspace()]
        return lines

    def numbers(self) -> list[int]:
        """The 0-based line number in `data` of each of `lines()`: they differ from its positions
        where blank lines were left out (HTTP reports a rejected line by its number)."""
        return [n for n, line in enumerate(self.data.split(b"\n")[:-1]) if line and not line.isspace()]

    def __len__(self) -> int:
        return len(self.lines())

    def __bool__(self) -> bool:  # without splitting: some line is not blank
        return not self.data.isspace()

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        return self.lines()[index]


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
        if self._discarding:
            cut = data.find(b"\n")
            if cut < 0:
                return [], 0
            data = data[cut + 1 :]
            self._discarding = False
        lines = data.split(b"\n")
        if self._rest:  # the line cut by the previous read: joined alone, not the whole read copied
            lines[0] = self._rest + lines[0]
        oversized = self._hold(lines.pop())
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

    def feed_block(self, data: bytes) -> tuple[LineBlock | list[bytes], int]:
        """`feed` for a listener that hands whole reads to `EventDecoder.decode_numbered`: the
        complete lines come back unsplit, as one LineBlock, when every one is proven within the
        limit by blocks (`_proven_short`); otherwise as `feed` gives them."""
        end = data.rfind(b"\n") + 1
        if not end or self._discarding or len(self._rest) + data.find(b"\n") > self.max_bytes or not self._proven_short(data, end):
            return self.feed(data)
        block = self._rest + data[:end] if self._rest else data[:end]
        return LineBlock(block), self._hold(data[end:])

    def _hold(self, rest: bytes) -> int:
        """Keep the unterminated `rest` for the next read; 1 if it is over the limit already (then
        it is skipped up to its newline), else 0."""
        if len(rest) > self.max_bytes:
            self._discarding = True
            self._rest = b""
            return 1
        self._rest = rest
        return 0

    def _all_short(self, data: bytes, lines: list[bytes]) -> bool:
        """No line is over max_bytes: by blocks (`_proven_short`) when it can, else line by line."""
        limit = self.max_bytes
        if (not lines or len(lines[0]) <= limit) and self._proven_short(data, data.rfind(b"\n") + 1):  # the first may hold the last read's rest
            return True
        return max(map(len, lines), default=0) <= limit

    def _proven_short(self, data: bytes, end: int) -> bool:
        """No line inside `data[:end]` (past its first newline) is over max_bytes. A line over it
        holds a whole aligned block of max_bytes / 2 bytes with no newline, so a newline found in
        every block proves them all short: a few memchr calls per read, not a len() per line (40 ns
        per event). False also when the limit is too small for blocks to pay."""
        half = self.max_bytes // 2
        if half < _BLOCK_SCAN_MIN:
            return False
        find = data.find
        return all(find(b"\n", start, start + half) >= 0 for start in range(0, end - 1, half))

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
# Whole label sets repeat too. The decoder keeps, per label set as sent (severity and success may
# be absent), what it becomes: its kept values, severity and success filled in, and its label-set
# number (sidecar.sinks.labelsets). One lookup per event then shares, fills and numbers it: three
# passes over the events before (the fill, the sharing, the first sink's numbering), 0.3 us per
# event more (BENCHMARKS.md, 2026-12-02 08:30-09:55). At most MAX_LABEL_ENTRIES; past that it starts again.
MAX_LABEL_ENTRIES = 20_000

# A LineBlock at least this long is parsed whole (EventDecoder._parse_block): no line objects. A
# shorter one goes line by line: below ~150 realistic events its checks cost more than the line
# objects it saves (BENCHMARKS.md, 2026-12-02 16:05-17:10).
BLOCK_MIN_BYTES = 48 * 1024
_NEWLINE, _RETURN, _OPEN, _CLOSE = ord("\n"), ord("\r"), ord("{"), ord("}")

# A label set as sent, and what it becomes: (number, type, agent, workflow, model, tool, severity, success).
_Raw = tuple[str, "str | None", "str | None", "str | None", "str | None", "str | None", "bool | None"]
_Labels = tuple[int, str, "str | None", "str | None", "str | None", "str | None", Any, bool]  # Any: a Severity


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

    def __init__(self, max_clock_skew: float = 300.0, pricer: Pricer | None = None, label_sets: LabelSets | None = None):
        self.max_clock_skew = max_clock_skew
        self.pricer = pricer  # fills in cost_usd from the price table (sidecar/pricing.py)
        self.label_sets = label_sets  # numbers each label set; the app gives the sinks' own
        self._decode: Callable[[bytes], Event] = msgspec.json.Decoder(Event).decode
        self.block_min = BLOCK_MIN_BYTES  # tests lower it to reach the whole-block parse with a few lines
        self._decode_lines: Callable[[bytes], list[Event]] = msgspec.json.Decoder(Event).decode_lines
        # type -> "is a *.failed type", or None when the name is invalid. Bounded: see _type_info.
        self._types: dict[str, bool | None] = {}
        self._shared: dict[str, str] = {}  # label value -> the copy events carry
        self._labels: dict[_Raw, _Labels] = {}  # see MAX_LABEL_ENTRIES
        self.known = KnownLabels()  # the kept label values, and decoders that give them as they are

    def _type_info(self, event_type: str) -> bool | None:
        info = is_failure_type(event_type) if valid_type(event_type) else None
        if len(event_type) <= MAX_TYPE_LENGTH and len(self._types) < _MAX_CACHED_TYPES:
            self._types[event_type] = info
        return info

    def decode(
        self, lines: Iterable[bytes], received_at: float, *, price: bool = True
    ) -> tuple[list[Event], Sequence[bytes], list[Rejection]]:
        """Decode each line (or body item) into an event, or a rejection with its index.
        `price=False` for a listener that priced its events already (OTLP, which knows the provider)."""
        events, raws, rejected, _ = self.decode_numbered(lines, received_at, price=price)
        return events, raws, rejected

    def decode_numbered(
        self, lines: Iterable[bytes], received_at: float, *, price: bool = True
    ) -> tuple[list[Event], Sequence[bytes], list[Rejection], Numbered | None]:
        """`decode`, and the events' label-set numbers for their Batch (None without `label_sets`).

        The usual batch (every line an ASCII event of a valid type, stamped within the clock
        rules) is checked and filled in bulk; any other goes line by line, which names each
        problem, reusing the parse when every line parsed. A LineBlock's usual batch is parsed
        whole and stays unsplit as the batch's raw lines."""
        items: Sequence[bytes] = lines if isinstance(lines, (list, LineBlock)) else list(lines)
        parsed: list[Event] | None = None
        literals = self.known.decoders(received_at)
        if isinstance(items, LineBlock):
            if len(items.data) >= self.block_min:
                parsed = self._parse_block(items.data, literals)
            if parsed is None:
                each = items.split()  # not kept: the batch keeps the block
                parsed = self._parse_all(each, literals)
                if parsed is None:
                    items = each  # line by line below
        else:
            parsed = self._parse_all(items, literals)  # type: ignore[arg-type]  # a list
        numbers = self._intern(parsed) if parsed is not None and self._in_time(parsed, received_at) else None
        events: list[Event]
        raws: Sequence[bytes]
        rejected: list[Rejection]
        if parsed is not None and numbers is not None:
            events, raws, rejected = parsed, items, []  # a LineBlock parsed whole stays unsplit
        else:
            # A block parsed whole has one event per line and no blank line: its lines() line up.
            listed: list[bytes] = items.lines() if isinstance(items, LineBlock) else items  # type: ignore[assignment]  # a list
            events, raws, rejected = self._decode_each(listed, received_at, parsed)
            numbers = self._intern(events)
            assert numbers is not None  # every event left is of a valid type
        if price and self.pricer is not None:
            self.pricer.fill_events(events)
        return events, raws, rejected, None if self.label_sets is None else self.label_sets.numbered(numbers)

    def _in_time(self, events: list[Event], received_at: float) -> bool:
        """Every event stamped (as epoch seconds) within the clock rules."""
        stamps: list[float] = [ev.timestamp for ev in events]  # type: ignore[misc]  # anything else raises TypeError below
        try:
            return not stamps or (0 <= min(stamps) and max(stamps) <= received_at + self.max_clock_skew)
        except TypeError:  # None (stamped on receipt) or a datetime (converted): line by line
            return False

    def _intern(self, events: list[Event]) -> list[int] | None:
        """Give each event the kept copies of its labels, its severity and success (when it sent
        none), and return its label-set number (-1 without `label_sets`, or see LabelSets).
        None, leaving the rest as they were, at an event whose type is not valid."""
        get = self._labels.get
        numbers: list[int] = []
        append = numbers.append
        if events and events[0].__class__ is not Event:  # decoded by Literals: its labels are the kept ones already
            for ev in events:
                found = get((ev.type, ev.agent, ev.workflow, ev.model, ev.tool, ev.severity, ev.success))
                if found is None:
                    found = self._new_labels(ev)
                    if found is None:
                        return None
                number, _, _, _, _, _, ev.severity, ev.success = found
                append(number)
            return numbers
        for ev in events:
            found = get((ev.type, ev.agent, ev.workflow, ev.model, ev.tool, ev.severity, ev.success))
            if found is None:
                found = self._new_labels(ev)
                if found is None:
                    return None
            number, ev.type, ev.agent, ev.workflow, ev.model, ev.tool, ev.severity, ev.success = found
            append(number)
        return numbers

    def _new_labels(self, ev: Event) -> _Labels | None:
        fails = self._types.get(ev.type, _UNKNOWN)
        if fails is _UNKNOWN:
            fails = self._type_info(ev.type)
        if fails is None:
            return None
        keep = self._keep
        type_, agent, workflow, model, tool = keep(ev.type), keep(ev.agent), keep(ev.workflow), keep(ev.model), keep(ev.tool)
        severity = ev.severity if ev.severity is not None else "error" if fails else "info"
        success = not fails if ev.success is None else ev.success
        number = -1 if self.label_sets is None else self.label_sets.number_of((type_, agent, workflow, model, tool, severity, success))  # type: ignore[arg-type]  # keep gives a str for a str
        found: _Labels = (number, type_, agent, workflow, model, tool, severity, success)  # type: ignore[assignment]  # keep gives a str for a str
        if all(v is None or len(v) <= MAX_SHARED_LENGTH for v in (type_, agent, workflow, model, tool)):  # else not kept past its batch
            if len(self._labels) >= MAX_LABEL_ENTRIES:
                self._labels.clear()
            self._labels[(type_, agent, workflow, model, tool, ev.severity, ev.success)] = found  # type: ignore[index]
            self.known.note((type_, agent, workflow, model, tool))
        return found

    def _keep(self, value: str | None) -> str | None:
        """The kept copy of a label value (see MAX_SHARED)."""
        if value is None or len(value) > MAX_SHARED_LENGTH:
            return value
        kept = self._shared.get(value)
        if kept is None:
            if len(self._shared) >= MAX_SHARED:
                self._shared.clear()
            kept = self._shared[value] = value
        return kept

    def _parse_all(self, lines: list[bytes], literals: Literals | None = None) -> list[Event] | None:
        """Every line parsed in one pass of C (by `literals` first, when given), or None when one
        is not ASCII or not an event."""
        if not all(map(bytes.isascii, lines)):  # msgspec does not check UTF-8 inside fields it skips
            return None
        if literals is not None:
            try:
                return list(map(literals.decode, lines))
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                self.known.missed()
        try:
            return list(map(self._decode, lines))
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return None

    def _parse_block(self, data: bytes, literals: Literals | None = None) -> list[Event] | None:
        """A LineBlock's events, parsed in one call of C (msgspec's `decode_lines`, by `literals`
        first when given); None when that would not give each line's own event (then it goes line
        by line).

        `decode_lines` reads a stream of JSON values, not lines: a value may span lines, and a
        line may hold two. Each line is one value when these hold: ASCII only, every newline but
        the last between a `}` (or `}\\r`) and a `{`, and as many values as lines. A JSON string
        holds no raw newline (msgspec refuses one, in skipped fields too), so that `}` and that
        `{` are not in a string: the `}` ends a value and the `{` starts one. Inside an object or
        an array a comma must come between the two, so they are top-level values, and every line
        holds at least one whole value; with as many values as lines, exactly one."""
        if not data.isascii():  # msgspec does not check UTF-8 inside fields it skips
            return None
        codes = np.frombuffer(data, np.uint8)
        breaks = np.flatnonzero(codes[1:-1] == _NEWLINE)  # the byte before each newline, but the last one's and a first byte's
        if not (codes[breaks + 2] == _OPEN).all():
            return None
        ends = codes[breaks]  # each line's last byte
        if not (ends == _CLOSE).all():
            crlf = ends == _RETURN  # CRLF: a `}` before the `\r` (JSON whitespace, as the newline is)
            if not ((crlf | (ends == _CLOSE)).all() and (codes[breaks[crlf] - 1] == _CLOSE).all()):
                return None
        events = None
        if literals is not None:
            try:
                events = literals.decode_lines(data)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                self.known.missed()
        if events is None:
            try:
                events = self._decode_lines(data)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                return None
        return events if len(events) == len(breaks) + 1 else None

    def _decode_each(
        self, lines: list[bytes], received_at: float, parsed: list[Event] | None
    ) -> tuple[list[Event], list[bytes], list[Rejection]]:
        """Line by line: each problem named. The accepted events still lack severity and success
        where they sent none: `_intern` fills them in, on this path as on the bulk one."""
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
            fails = types.get(ev.type, _UNKNOWN)
            if fails is _UNKNOWN:
                fails = type_info(ev.type)
            if fails is None:
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
            events.append(ev)  # severity and success are filled in by _intern, as on the bulk path
            raws.append(line)
        return events, raws, rejected
