"""Property and fuzz tests: the decoder, the line framer and the HTTP body handling take any
bytes, account for every input with a reason, let no exception escape and lose no good event.
The long run (>= 1,000,000 inputs) is `python bench/fuzz.py`."""

import json
import random

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing as fuzz
from sidecar.ingest.http import BOM, split_body
from sidecar.protocol import REASONS, EventDecoder
from sidecar.testing import running_sidecar

POOL = [fuzz.good_event(random.Random(i)) for i in range(200)]

good_events = st.sampled_from(POOL)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["type", "agent", "timestamp", "duration_ms", "input_tokens", "x"]) | st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)
bad_inputs = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(fuzz.SPECIALS),
    st.builds(lambda seed, data, other: fuzz.mutate(random.Random(seed), data, other), st.integers(), good_events, good_events),
    json_values.map(lambda v: json.dumps(v).encode()),
)
# (is_good, bytes) pairs: good events planted among arbitrary inputs
mixed_lines = st.lists(st.tuples(st.just(True), good_events) | st.tuples(st.just(False), bad_inputs), min_size=1, max_size=12)


@given(mixed_lines)
@settings(max_examples=200, deadline=None)
def test_decoder_accounts_for_every_line_and_never_loses_a_good_event(pairs):
    decoder = EventDecoder()
    lines = [data for _, data in pairs]
    fuzz.check_decode(decoder, lines, {i for i, (good, _) in enumerate(pairs) if good})


@given(st.lists(good_events | bad_inputs, max_size=10), st.lists(st.integers(0, 5000), max_size=6), st.sampled_from([b"", b"\n", b"\r\n"]), st.sampled_from([64, 512, 4096]))
@settings(max_examples=200, deadline=None)
def test_framer_gives_the_same_lines_however_the_stream_is_chunked(lines, cuts, end, max_bytes):
    fuzz.check_framer(b"\n".join(lines) + end, cuts, max_bytes)


@given(
    st.lists(st.integers(0, 3 * 8192) | st.sampled_from([4095, 4096, 4097, 8191, 8192, 8193, 12288]), max_size=12),
    st.lists(st.integers(0, 60_000), max_size=6), st.sampled_from([b"", b"\n"]),
)
@settings(max_examples=300, deadline=None)
def test_framer_finds_every_oversized_line_when_it_proves_lines_short_by_blocks(lengths, cuts, end):
    # max_bytes 8192: LineFramer looks for a newline in each 4 KiB block instead of measuring lines.
    fuzz.check_framer(b"\n".join(b"x" * n for n in lengths) + end, cuts, 8192)


# Lines that may hold part of an event, two events, or an event with nested values: what could
# make a read parsed whole (EventDecoder._parse_block) differ from its lines.
def _cut(event: bytes, payload: bytes, k: int) -> list[bytes]:
    """An event with a nested payload, cut in two lines right before a `{`, right after a `}`, or
    at a comma: one value over two lines, which only the checks tell from two."""
    line = event[:-1] + b', "payload": ' + payload + b"}"
    places = [i for i in range(1, len(line) - 1) if line[i] in b"{},"]
    at = places[k % len(places)]
    if line[at] == ord("{"):
        return [line[:at], line[at:]]
    return [line[: at + 1], line[at + 1 :]]


line_groups = st.one_of(
    good_events.map(lambda line: [line]),
    bad_inputs.map(lambda line: [line]),
    st.builds(lambda a, b, sep: [a + sep + b], good_events, good_events, st.sampled_from([b",", b" ", b""])),
    st.builds(lambda line, v: [line[:-1] + b', "payload": ' + json.dumps(v).encode() + b"}"], good_events, json_values),
    st.builds(_cut, good_events, json_values.map(lambda v: json.dumps(v).encode()), st.integers(0, 1000)),
)
block_lines = st.lists(line_groups, min_size=1, max_size=12).map(lambda groups: [line for group in groups for line in group])


@given(block_lines, st.sampled_from([b"\n", b"\r\n"]))
@settings(max_examples=300, deadline=None)
def test_a_read_decoded_whole_gives_what_its_lines_give(lines, end):
    fuzz.check_block(fuzz.block_decoders(), b"".join(line + end for line in lines))


def _as_the_route_reports(body: bytes) -> tuple[list, list[bytes], list[tuple[int, str]]]:
    items, positions, rejected = split_body(body, "application/x-ndjson", 65536)
    events, raws, bad = EventDecoder().decode(items, fuzz.NOW)
    rejected += [r._replace(index=positions[r.index]) for r in bad]
    return events, list(raws), sorted((r.index, r.reason) for r in rejected)


@given(block_lines, st.sampled_from([b"\n", b"\r\n"]), st.sampled_from([b"", b"\n", b"\n\n  \n"]))
@settings(max_examples=100, deadline=None)
def test_a_large_ndjson_body_is_reported_as_its_lines_are(lines, end, gap):
    """split_body keeps an NDJSON body of BLOCK_MIN_BYTES or more as one LineBlock: what the route
    answers (events, raw lines, each rejection's line number and reason) is what line by line gives."""
    import sidecar.ingest.http as http
    from sidecar.protocol import BLOCK_MIN_BYTES, LineBlock

    padding = (POOL[0] + b"\n") * (BLOCK_MIN_BYTES // len(POOL[0]) + 1)
    body = padding + gap + end.join(lines) + end[: len(end) * (len(lines) % 2)]  # every other body unterminated
    # A line of half the limit or more may hold a whole block of the framer's proof (LineFramer._proven_short): not proven short.
    assert isinstance(split_body(body, "application/x-ndjson", 65536)[0], LineBlock) or any(len(line) >= 65536 // 2 for line in lines)
    whole = _as_the_route_reports(body)
    http.BLOCK_MIN_BYTES = 1 << 62
    try:
        assert whole == _as_the_route_reports(body)
    finally:
        http.BLOCK_MIN_BYTES = BLOCK_MIN_BYTES


@pytest.mark.untraced
@given(mixed_lines, st.sampled_from(fuzz.CONTENT_TYPES), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
@settings(max_examples=200, deadline=None)
def test_split_body_never_raises_and_keeps_every_good_ndjson_line(pairs, content_type, sep, bom):
    body = (BOM if bom else b"") + sep.join(data for _, data in pairs)
    good = [data for is_good, data in pairs if is_good]
    fuzz.check_split_body(body, content_type, good)


@pytest.mark.untraced
@given(st.lists(good_events | bad_inputs, min_size=1, max_size=20))
@settings(max_examples=150, deadline=None)
def test_every_accepted_event_is_consumed_and_rendered_by_the_real_metrics_sink(lines):
    events, _ = fuzz.check_decode(EventDecoder(), lines, set())
    check = fuzz.SinkCheck()
    check.consume(events)
    assert b"agent_events_total" in check.render() or not events


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"type":"a","payload":' + b"[" * 50_000 + b"]" * 50_000 + b"}", "invalid_json"),  # was a RecursionError
        (b'{"type":"a","input_tokens":' + b"9" * 400 + b"}", "out_of_range"),  # was an OverflowError in the sink
        (b'{"type":"a","tokens":9007199254740993}', "out_of_range"),  # beyond what a float cell holds exactly
        (b'{"type":"a","timestamp":1e999}', "bad_timestamp"),
        (b'{"type":"a","duration_ms":1e999}', "out_of_range"),
        (b'{"type":"a","duration_ms":1.7976931348623157e308}', "out_of_range"),  # two of these summed to inf
        (b'{"type":"a","cost_usd":1e308}', "out_of_range"),
        (b'{"type":"a","cost_usd":1000000000.0001}', "out_of_range"),
        (b'{"type":"a","output_tokens":1000000000001}', "out_of_range"),
        (b'{"type":"a","duration_ms":1e12,"cost_usd":-1e308}', "invalid_field"),
        (b'{"type":"a","trace_id":7}', "invalid_field"),
        (b'{"type":"a\x00"}', "invalid_json"),
        (b'{"type":"a","agent":"\xed\xa0\x80"}', "invalid_utf8"),
        (b'{"type":"a","agent":"\\ud800"}', "invalid_json"),
        (b"\xef\xbb\xbf{\"type\":\"a\"}", "invalid_json"),  # a BOM mid-stream is not JSON
        (b"\x00" * 10, "invalid_json"),
    ],
)
def test_hostile_line_is_rejected_with_its_reason(line, reason):
    events, _, rejected = EventDecoder().decode([line, POOL[0]], fuzz.NOW)
    assert [r.reason for r in rejected] == [reason] and reason in REASONS
    assert len(events) == 1  # the good event beside it


@pytest.mark.parametrize("trace_id", fuzz._IDS)
def test_an_event_with_any_string_id_is_accepted_and_every_scrape_stays_valid(trace_id):
    """Never lose a good event for a cosmetic field: any string id is accepted; only W3C ids
    reach an exemplar, and both exposition formats render (render() checks the limits)."""
    limits = {name: int(v) if "tokens" in name else v for name, v in fuzz.MAXIMUM.items()}
    line = json.dumps({"type": "llm.call", "trace_id": trace_id, "span_id": trace_id, **limits}).encode()
    events, _ = fuzz.check_decode(EventDecoder(), [line] * 3, {0, 1, 2})
    check = fuzz.SinkCheck()
    check.consume(events)
    check.render()


def test_deeply_nested_array_body_is_one_clear_rejection():
    items, _, rejected = split_body(b"[" * 100_000 + b"]" * 100_000, "application/json", 65536)
    assert items == [] and rejected[0].reason == "invalid_json" and "nested too deeply" in rejected[0].message


def test_bom_and_crlf_in_an_http_body_are_tolerated():
    body = BOM + POOL[0] + b"\r\n" + POOL[1] + b"\r\n"
    items, _, rejected = split_body(body, "application/x-ndjson", 65536)
    assert rejected == []
    assert len(EventDecoder().decode(items, fuzz.NOW)[0]) == 2


@pytest.mark.untraced
def test_fuzz_run_of_20000_inputs_finds_no_crash():
    stats = fuzz.run(20_000, seed=1)
    assert stats.inputs >= 20_000 and stats.crashes == []
    assert stats.accepted and set(stats.rejected) <= set(REASONS)


@pytest.fixture(scope="module")
def live():
    with running_sidecar(**{"ingest.max_event_bytes": 4096, "ingest.max_body_bytes": 65536}) as s, httpx.Client(base_url=s.url) as client:
        s.client = client
        yield s


def _received(s) -> float:
    return s.value("sidecar_events_received_total", {"transport": "http"}) or 0


@pytest.mark.untraced
@given(pairs=mixed_lines, content_type=st.sampled_from(fuzz.CONTENT_TYPES), array=st.booleans())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_real_route_answers_every_body_and_counts_every_item(live, pairs, content_type, array):
    lines = [data for _, data in pairs]
    body = b"[" + b",".join(lines) + b"]" if array else b"\n".join(lines)
    before = _received(live)
    r = live.client.post("/v1/events", content=body, headers={"content-type": content_type})
    assert r.status_code in (202, 400, 413), r.text
    answer = r.json()
    assert _received(live) - before == answer["accepted"] + answer["rejected"] + answer.get("dropped", 0)
    for error in answer["errors"]:
        assert error["error"].split(":")[0] in REASONS
    if "ndjson" in content_type and not array and r.status_code != 413:
        assert answer["accepted"] >= sum(1 for good, _ in pairs if good)
    assert live.client.get("/healthz").status_code == 200


@given(seed=st.integers(0, 2**32), agent_seed=st.integers(0, 2**32))
@settings(max_examples=30, deadline=None)
def test_a_glob_filter_reads_at_most_the_label_of_a_long_value(seed, agent_seed):
    """Work, not time: the most globs a filter may hold, each as long as allowed and rich in `*`,
    against values up to a megabyte: the matcher is handed at most MAX_LABEL_LENGTH characters
    of each value (check_tail_globs counts them) and agrees with fnmatch on that label."""
    rnd = random.Random(seed)
    globs = fuzz.hostile_globs(rnd)
    fuzz.check_tail_globs(globs, fuzz.long_value(random.Random(agent_seed)))


def test_a_glob_that_matches_only_past_the_label_does_not_match():
    assert fuzz.check_tail_globs(["*b", "x*"], "a" * (fuzz.MAX_LABEL_LENGTH - 1) + "b")
    assert not fuzz.check_tail_globs(["*b", "*ab"], "a" * fuzz.MAX_LABEL_LENGTH + "b")


@given(seed=st.integers(0, 2**32), good=good_events)
@settings(max_examples=200, deadline=None)
def test_an_out_of_range_number_beside_a_sender_set_received_at_is_spliced(seed, good):
    """`1e999` in a payload (the event decoder accepts it without looking) next to a
    `received_at` the sender set, however spelled: the event is accepted and the tail's splice
    replaces received_at and keeps every other member byte for byte."""
    line = fuzz.event_with_huge_payload(random.Random(seed), good)
    events, _ = fuzz.check_decode(EventDecoder(), [line], {0})
    fuzz.check_splice(line, 1_790_000_000.25)
