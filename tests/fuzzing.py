"""Fuzzing the decoder and the HTTP body handling: input generators and the invariants they keep.

`tests/test_fuzz.py` drives the checks with hypothesis (a fast run in CI); `bench/fuzz.py`
drives them with `generate()` for a long run (>= 1,000,000 inputs). The invariants:

- every input is accepted or rejected with one of `protocol.REASONS` and a message,
  and no exception escapes the framer, the decoder or `split_body`;
- no good event beside a bad one is lost (good lines are planted at known places);
- framing does not depend on how the stream was chunked into reads;
- every accepted event can be consumed by the real metrics sink and rendered by
  /metrics in both exposition formats, with every value finite and every exemplar
  within OpenMetrics' limits (a decoder that lets a value through the sink cannot hold
  is a bug too).

Shapes beyond mutation (issue 14): numbers at and just past each field's limit and near the
float limit, ids with control characters and other non-hex, very long values, and large
single objects. For the live tail: long values against the most globs a filter may hold (the
regex work per event, counted as characters handed to the matcher, stays within the label
length however long the value), and out-of-float-range numbers in a payload beside a
`received_at` the sender set (the splice keeps them, byte for byte, and never fails).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import fnmatch
import math

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from sidecar.config import Config
from sidecar.contract import MAXIMUM, w3c_span_id, w3c_trace_id
from sidecar.ingest.http import split_body
from sidecar.protocol import REASONS, EventDecoder, LineBlock, LineFramer
from sidecar.sinks.labelsets import LabelSets
from sidecar.sinks.metrics import MetricsSink
from sidecar.sinks.series import MAX_LABEL_LENGTH
from sidecar.sinks.tail import MAX_GLOB_LENGTH, MAX_GLOBS, _with_received_at, parse_filter
from sidecar.types import Batch, Event, Rejection

NOW = 1_790_000_000.0
MAX_EVENT_BYTES = 4096  # small, so the too_large paths are exercised often
CONTENT_TYPES = ("application/json", "application/x-ndjson", "", "text/plain", "application/jsonl")

_TYPES = ("llm.call", "tool.call", "agent.invoked", "agent.failed", "workflow.completed", "x", "a-b.c_d.e1")
_WORDS = ("alpha", "b\u00e9ta", "\u6f22\u5b57", "emoji \U0001f600", "", "a b", 'quo"te', "back\\slash", "tab\tnl\n")

# Fragments a mutation splices in: the inputs the issue names, and what breaks parsers.
SPECIALS = (
    b"\x00", b"\xef\xbb\xbf", b"\r\n", b"\r", b"\n", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b'"', b"\\", b"\\u0000", b"\\ud800", b"{", b"}", b"[", b"]", b",", b":", b"null", b"true", b"-",
    b"1e999", b"-1e999", b"9" * 400, b"-0", b"0.0000000000000000000001", b"1E+308", b"NaN", b"Infinity",
    b"[" * 2000, b"{\"a\":" * 2000, b"\"timestamp\":", b"\"type\":", b"\"type\":\"\"", b"\t", b" " * 100,
)
_HUGE_VALUES = (b"9" * 400, b"1e999", b"-1e999", b"1.7976931348623157e308", b"-9223372036854775809",
                b"18446744073709551616", b"9007199254740993", b"1e-400", b"-0.0")
_FIELDS = (b"timestamp", b"duration_ms", b"input_tokens", b"output_tokens", b"tokens", b"cost_usd", b"success", b"type", b"agent")
# Finite numbers around every limit: each field's maximum, just past it, and the float limit.
_LIMITS = tuple(sorted({v for m in MAXIMUM.values() for v in (m, m * (1 + 1e-12), m + 1) if math.isfinite(v)}))
_HUGE_FINITE = (*_LIMITS, 1.7976931348623157e308, 1e308, 9.9e307, 2.0**63, 2.0**64, 2.0**53 + 2)
_HUGE_VALUES += tuple(repr(v).encode() for v in _HUGE_FINITE) + tuple(str(int(v)).encode() for v in _LIMITS)
# Ids that are not W3C hex: they are accepted and must never reach an exemplar label.
W3C_TRACE, W3C_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
_IDS = (
    W3C_TRACE, W3C_SPAN, W3C_TRACE + "\x00", "\x00" * 32, W3C_TRACE[:31] + "\n", "\x1b[31m" + W3C_TRACE, W3C_TRACE.upper(),
    "0" * 32, "0" * 16, "g" * 32, "\u202e" + W3C_SPAN, "\x7f" * 16, W3C_TRACE * 8, "\ufeff", "t-1", "", "\ud7ff" * 40,
    'a"b\\c\nd}' * 10, "f" * 129,
)


def good_event(rnd: random.Random, long_values: bool = True) -> bytes:
    """A random event every sidecar must accept (compact JSON, no newline, at most MAX_EVENT_BYTES)."""
    ev: dict = {"type": rnd.choice(_TYPES)}
    if rnd.random() < 0.5:
        ev["timestamp"] = NOW - rnd.random() * 1000
    elif rnd.random() < 0.3:
        ev["timestamp"] = "2026-09-21T10:00:00.123+02:00"
    for key in ("agent", "workflow", "model", "run_id", "invocation_id", "error", "session_id"):
        if rnd.random() < 0.4:
            ev[key] = rnd.choice(_WORDS) + str(rnd.randrange(5))
        elif long_values and rnd.random() < 0.05:  # very long: labels are cut to 128 characters, caches must not keep more
            ev[key] = rnd.choice(_WORDS) * rnd.randrange(100, 300)
    for key in ("trace_id", "span_id"):
        if rnd.random() < 0.5:
            ev[key] = rnd.choice(_IDS)
    if rnd.random() < 0.5:
        ev["duration_ms"] = rnd.choice((0, 1, 12.5, 1e6, rnd.random() * 10_000, MAXIMUM["duration_ms"]))
    for key in ("input_tokens", "output_tokens", "tokens"):
        if rnd.random() < 0.3:
            ev[key] = rnd.choice((0, 1, 100, 10**9, int(MAXIMUM[key])))
    if rnd.random() < 0.3:
        ev["cost_usd"] = rnd.choice((rnd.random(), MAXIMUM["cost_usd"]))
    if rnd.random() < 0.2:
        ev["success"] = rnd.random() < 0.5
    if rnd.random() < 0.2:
        ev["severity"] = rnd.choice(("debug", "info", "warning", "error", "critical"))
    if rnd.random() < 0.3:
        ev["payload"] = {"nested": [1, {"deep": [None, True, "x" * rnd.randrange(50)]}], "n": rnd.random()}
    line = json.dumps(ev, ensure_ascii=rnd.random() < 0.5, separators=(",", ":")).encode()
    return line if len(line) <= MAX_EVENT_BYTES else good_event(rnd, long_values=False)


def w3c_id(value: str) -> bool:
    return w3c_trace_id(value) or w3c_span_id(value)


def large_object(rnd: random.Random, good: bytes, size: int) -> bytes:
    """One event (a single JSON object) grown to about `size` bytes by a long payload string."""
    return good[:-1] + b',"payload":"' + b"x" * size + b'"}'


def mutate(rnd: random.Random, data: bytes, other: bytes) -> bytes:
    """One of: truncate, flip, insert, delete, splice with `other`, special fragment, huge value, nest."""
    n = len(data)
    at = rnd.randrange(n + 1)
    op = rnd.randrange(9)
    if op == 0:
        return data[:at]
    if op == 1 and n:
        i = rnd.randrange(n)
        return data[:i] + bytes([data[i] ^ (1 << rnd.randrange(8))]) + data[i + 1 :]
    if op == 2:
        return data[:at] + rnd.randbytes(rnd.randrange(1, 8)) + data[at:]
    if op == 3:
        return data[:at] + data[at + rnd.randrange(1, 16) :]
    if op == 4:
        return data[:at] + other[rnd.randrange(len(other) + 1) :]
    if op == 5:
        return data[:at] + rnd.choice(SPECIALS) + data[at:]
    if op == 6:
        key = rnd.choice(_FIELDS)
        return data[:-1] + b',"' + key + b'":' + rnd.choice(_HUGE_VALUES) + b"}" if data.endswith(b"}") else data + rnd.choice(_HUGE_VALUES)
    if op == 7:
        depth = rnd.choice((10, 100, 1000, 5000, 20_000))
        return data[:-1] + b',"payload":' + b"[" * depth + b"]" * depth + b"}" if data.endswith(b"}") else b"[" * depth + data
    return data.replace(b'"', b"'", 1) if rnd.random() < 0.5 else data.upper()


def generate(rnd: random.Random, pool: list[bytes]) -> bytes:
    """One fuzz input: usually a mutated (possibly several times) good event from `pool`,
    sometimes raw noise."""
    kind = rnd.random()
    if kind < 0.08:
        return rnd.randbytes(rnd.randrange(0, 200))
    if kind < 0.12:
        return rnd.choice(SPECIALS) * rnd.randrange(1, 4)
    if kind < 0.13:
        return large_object(rnd, rnd.choice(pool), rnd.choice((MAX_EVENT_BYTES // 2, MAX_EVENT_BYTES, 64 * 1024)))
    data = rnd.choice(pool)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        data = mutate(rnd, data, rnd.choice(pool))
    return data


# ---- the invariants ---------------------------------------------------------------------------


def check_decode(
    decoder: EventDecoder, lines: list[bytes], good: set[int], now: float = NOW
) -> tuple[list[Event], list[Rejection]]:
    """Decode `lines`; assert every line is accounted for once and every good one accepted."""
    events, raws, rejected = decoder.decode(lines, now)
    assert len(events) == len(raws)
    assert len(events) + len(rejected) == len(lines), "a line was neither accepted nor rejected"
    rejected_at = {r.index for r in rejected}
    assert len(rejected_at) == len(rejected) and rejected_at <= set(range(len(lines)))
    for r in rejected:
        assert r.reason in REASONS, r
        assert r.message, r
    assert not (good & rejected_at), f"good line rejected: {[r for r in rejected if r.index in good]}"
    accepted_raws = [lines[i] for i in range(len(lines)) if i not in rejected_at]
    assert raws == accepted_raws, "raws must be the exact accepted lines, in order"
    for ev in events:
        assert ev.timestamp.__class__ is float and ev.severity is not None and ev.success is not None
        assert ev.timestamp <= now + decoder.max_clock_skew
    return events, rejected


def reference_lines(stream: bytes, max_bytes: int) -> tuple[list[bytes], int]:
    """What a framer must produce for `stream` however it is chunked (the oracle)."""
    parts = stream.split(b"\n")
    tail = parts.pop()
    out = [p for p in parts if p and not p.isspace() and len(p) <= max_bytes]
    oversized = sum(1 for p in parts if len(p) > max_bytes)
    if len(tail) > max_bytes:
        oversized += 1
    elif tail and not tail.isspace():
        out.append(tail)
    return out, oversized


def check_framer(stream: bytes, cuts: list[int], max_bytes: int) -> list[bytes]:
    """Feed `stream` cut at `cuts`, by `feed` and by `feed_block`; assert the lines equal the
    unchunked reference."""
    reference = reference_lines(stream, max_bytes)
    for block in (False, True):
        framer = LineFramer(max_bytes)
        feed = framer.feed_block if block else framer.feed
        lines: list[bytes] = []
        oversized = 0
        start = 0
        for cut in sorted(set(c for c in cuts if 0 < c < len(stream))) + [len(stream)]:
            got, over = feed(stream[start:cut])
            assert bool(got) == bool(list(got))  # LineBlock answers without splitting
            lines += got
            oversized += over
            start = cut
        tail = framer.finish()
        if tail:
            lines.append(tail)
        assert (lines, oversized) == reference, f"block={block}"
    return lines


def block_decoders() -> tuple[EventDecoder, EventDecoder]:
    """(one that parses every LineBlock whole where it can, one that takes lines) for check_block."""
    whole = EventDecoder(label_sets=LabelSets())
    whole.block_min = 0  # every block tries the whole-block parse, however short
    return whole, EventDecoder(label_sets=LabelSets())


def check_block(decoders: tuple[EventDecoder, EventDecoder], stream: bytes, now: float = NOW) -> None:
    """`stream` (complete lines) decoded as one read (EventDecoder._parse_block) gives what its
    lines give one by one: the same events, raw lines, rejections and label-set numbers. The two
    decoders stay in step while they agree, so a pair can serve many streams."""
    whole, by_line = decoders
    events, raws, rejected, numbered = whole.decode_numbered(LineBlock(stream), now)
    want = by_line.decode_numbered(reference_lines(stream, 1 << 30)[0], now)
    assert numbered is not None and want[3] is not None
    assert (events, list(raws), rejected, numbered.numbers) == (want[0], list(want[1]), want[2], want[3].numbers)


def check_split_body(body: bytes, content_type: str, good_lines: list[bytes]) -> tuple[Sequence[bytes], Sequence[int]]:
    """split_body never raises, reports positions for every item, rejects with a known reason,
    and (NDJSON) keeps every good line as an item."""
    items, positions, rejected = split_body(body, content_type, MAX_EVENT_BYTES)
    assert len(items) == len(positions)
    assert list(positions) == sorted(set(positions))
    for r in rejected:
        assert r.reason in REASONS and r.message, r
    if "ndjson" in content_type:
        kept = {item.rstrip(b"\r") for item in items}  # CRLF line ends are fine
        assert not set(good_lines) - kept, "a good NDJSON line was lost"
    return items, positions


@dataclass
class SinkCheck:
    """A real metrics sink and registry that every accepted event goes through."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    sink: MetricsSink = field(init=False)

    def __post_init__(self) -> None:
        config = Config()
        self.sink = MetricsSink(config.metrics, config.lifecycle, self.registry)

    def consume(self, events: list[Event]) -> None:
        self.sink.consume(Batch(events, [b""] * len(events), NOW, "fuzz"))  # raises on a value it cannot hold

    def render(self) -> bytes:
        """Both exposition formats; asserts every value is finite and the OpenMetrics text
        parses (its parser refuses an exemplar label set over 128 characters, as Prometheus does)."""
        self.sink.maintain(NOW)
        text = generate_latest(self.registry)
        for family in text_string_to_metric_families(generate_openmetrics(self.registry).decode()):
            for sample in family.samples:
                assert math.isfinite(sample.value), sample
                if sample.exemplar is not None:
                    assert set(sample.exemplar.labels) <= {"trace_id", "span_id"}, sample.exemplar
                    assert all(map(w3c_id, sample.exemplar.labels.values())), sample.exemplar
        return text


# ---- the live tail ---------------------------------------------------------------------------


class Metered(str):
    """A field value that counts the characters handed out of it. A glob matcher that cuts the
    value first reads it through `[:n]`; one that matched the whole value would read nothing
    through here, and `read` would stay 0."""

    read: int

    def __new__(cls, value: str) -> Metered:
        obj = super().__new__(cls, value)
        obj.read = 0
        return obj

    def __getitem__(self, key):  # type: ignore[override]
        part = str.__getitem__(self, key)
        self.read += len(part)
        return part


_GLOB_ATOMS = ("*", "?", "a", "[ab]", "*a", "a*", "[!a]")


def hostile_globs(rnd: random.Random) -> list[str]:
    """MAX_GLOBS globs of up to MAX_GLOB_LENGTH characters, rich in `*` (the backtracking kind)."""
    globs = []
    while len(globs) < MAX_GLOBS:
        glob = "*"
        while len(glob) < MAX_GLOB_LENGTH - 4:
            glob += rnd.choice(_GLOB_ATOMS)
        glob = glob[: MAX_GLOB_LENGTH - 1] + "b"
        if glob not in globs:
            globs.append(glob)
    return globs


def long_value(rnd: random.Random) -> str:
    """A value up to a megabyte, mostly `a`: the text every `*a*a*...b` glob tries hardest on."""
    size = rnd.choice((MAX_LABEL_LENGTH - 1, MAX_LABEL_LENGTH, MAX_LABEL_LENGTH + 1, 4096, 1 << 20))
    return "".join(rnd.choice("aaaab\u00e9") for _ in range(min(size, 300))) * (size // min(size, 300) + 1)


def check_tail_globs(globs: list[str], value: str) -> bool:
    """Match one event against a filter of `globs` on `agent`, and one on `type`; assert each
    matcher read at most MAX_LABEL_LENGTH characters of the value (the work bound, whatever its
    length) and agrees with fnmatch on the label value. Returns the match."""
    expect = any(fnmatch.fnmatchcase(value[:MAX_LABEL_LENGTH], g) for g in globs)
    for key in ("agent", "type"):
        check = parse_filter([(key, globs)]).predicate()
        assert check is not None
        metered = Metered(value)
        event = Event(type=metered) if key == "type" else Event(type="t", agent=metered)
        assert check(event) == expect, (key, expect)
        assert 0 < metered.read <= MAX_LABEL_LENGTH, f"the {key} glob matcher read {metered.read} characters of a {len(value)}-character value"
    return expect


_PAYLOAD_NUMBERS = (b"1e999", b"-1e999", b"1E+400", b"9" * 400, b"1e-999", b"-0")
_RECEIVED_AT_KEYS = (b'"received_at"', b'"received\\u005fat"', b'"\\u0072eceived_at"')


def event_with_huge_payload(rnd: random.Random, good: bytes) -> bytes:
    """A good event with an out-of-float-range number in its payload and a `received_at` the
    sender set (its key spelled plainly or with escapes), in either order."""
    number = rnd.choice(_PAYLOAD_NUMBERS)
    payload = rnd.choice((b'{"big":' + number + b"}", b"[" + number + b"]", number))
    members = [b'"payload":' + payload, rnd.choice(_RECEIVED_AT_KEYS) + b":" + rnd.choice((b"1", b'"soon"', b"null", number))]
    rnd.shuffle(members)
    return good[:-1] + b"," + b",".join(members) + b"}"


def check_splice(raw: bytes, received_at: float) -> bytes:
    """Splice `received_at` into an accepted event: the result is one JSON object with exactly
    one `received_at` (ours) and every other member byte for byte as sent."""
    suffix = b',"received_at":' + repr(received_at).encode() + b"}"
    out = _with_received_at(raw, suffix, received_at)
    sent = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    keys = json.loads(out, object_pairs_hook=lambda pairs: [k for k, _ in pairs])  # every key, repeats too
    assert keys.count("received_at") == 1, keys
    got = msgspec.json.decode(out, type=dict[str, msgspec.Raw])
    assert bytes(got["received_at"]) == repr(received_at).encode()
    sent.pop("received_at", None)
    del got["received_at"]
    assert {k: bytes(v) for k, v in got.items()} == {k: bytes(v) for k, v in sent.items()}
    return out


# ---- the long run -----------------------------------------------------------------------------


@dataclass
class Crash:
    where: str
    error: str
    inputs: list[bytes]


@dataclass
class FuzzStats:
    inputs: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    crashes: list[Crash] = field(default_factory=list)
    seconds: float = 0.0


def _rounds(rnd: random.Random) -> Iterator[tuple[list[bytes], set[int]]]:
    pool = [good_event(rnd) for _ in range(5000)]  # generating JSON would cost more than checking it
    while True:
        lines = [generate(rnd, pool) for _ in range(rnd.randrange(1, 8))]
        good: set[int] = set()
        for _ in range(rnd.randrange(0, 3)):  # plant good events among the garbage
            at = rnd.randrange(len(lines) + 1)
            lines.insert(at, rnd.choice(pool))
            good = {i + (i >= at) for i in good} | {at}
        yield lines, good


def run(n: int, seed: int = 0, progress: Callable[[FuzzStats], None] | None = None) -> FuzzStats:
    """Generate at least `n` inputs and check every invariant on each; crashes are collected, not raised."""
    rnd = random.Random(seed)
    decoder = EventDecoder()
    decoders = block_decoders()
    sink = SinkCheck()
    stats = FuzzStats()
    pending: list[Event] = []
    started = time.perf_counter()
    next_report = 100_000
    for lines, good in _rounds(rnd):
        stats.inputs += len(lines)
        step = "decode"
        try:
            events, rejected = check_decode(decoder, lines, good)
            stats.accepted += len(events)
            for r in rejected:
                stats.rejected[r.reason] = stats.rejected.get(r.reason, 0) + 1
            pending += events
            step = "framer"
            stream = b"\n".join(lines) + rnd.choice((b"", b"\n", b"\r\n"))
            check_framer(stream, [rnd.randrange(len(stream) + 1) for _ in range(rnd.randrange(4))], MAX_EVENT_BYTES)
            step = "block"
            check_block(decoders, b"".join(line + b"\n" for line in lines))
            step = "split_body"
            good_lines = [lines[i] for i in good if len(lines[i]) <= MAX_EVENT_BYTES]
            check_split_body(stream, rnd.choice(CONTENT_TYPES), good_lines)
            body = b"[" + b",".join(lines) + b"]"
            check_split_body(body, "application/json", [])
            if len(pending) >= 1000:
                step = "metrics sink"
                sink.consume(pending)
                pending = []
        except Exception as exc:  # an escaped exception or a broken invariant: record it, keep going
            stats.crashes.append(Crash(step, f"{type(exc).__name__}: {exc}"[:500], lines))
            pending = []
        if stats.inputs >= next_report:
            next_report += 100_000
            try:
                sink.render()
            except Exception as exc:
                stats.crashes.append(Crash("metrics render", f"{type(exc).__name__}: {exc}"[:500], []))
            if progress:
                stats.seconds = time.perf_counter() - started
                progress(stats)
        if stats.inputs >= n:
            break
    try:
        sink.consume(pending)
        sink.render()
    except Exception as exc:
        stats.crashes.append(Crash("metrics render", f"{type(exc).__name__}: {exc}"[:500], []))
    stats.seconds = time.perf_counter() - started
    return stats
