import asyncio
import gzip
import json
import re

import httpx
import pytest

from sidecar.testing import event, ndjson, running_sidecar

TYPE_ONLY = {"type": "llm.call", "agent": "", "workflow": "", "severity": "info"}


def post(s, body, content_type="application/json", **headers):
    return httpx.post(s.url + "/v1/events", content=body, headers={"content-type": content_type, **headers})


def test_single_object_is_accepted(sidecar):
    r = post(sidecar, json.dumps(event()))
    assert (r.status_code, r.json()) == (202, {"accepted": 1, "rejected": 0, "errors": []})
    sidecar.wait_processed(1)
    assert sidecar.value("agent_events_total", TYPE_ONLY) == 1


def test_pretty_printed_object_is_one_event(sidecar):
    r = post(sidecar, json.dumps(event(agent="x"), indent=2))
    assert r.json()["accepted"] == 1


def test_array_reports_each_bad_item_by_index(sidecar):
    body = json.dumps([event(), {"agent": "x"}, event(), 42, event(duration_ms=-1)])
    r = post(sidecar, body)
    assert r.status_code == 202
    assert r.json()["accepted"] == 2 and r.json()["rejected"] == 3
    assert [(e["index"], e["error"].split(":")[0]) for e in r.json()["errors"]] == [(1, "missing_type"), (3, "not_object"), (4, "invalid_field")]
    assert "$.duration_ms" in r.json()["errors"][2]["error"]


def test_ndjson_reports_errors_by_line_number(sidecar):
    body = ndjson(event()) + b"\n" + b"oops\n" + ndjson(event()) + b'{"type": "x", "pad": "' + b"p" * 70_000 + b'"}\n'
    r = post(sidecar, body, "application/x-ndjson")
    assert r.status_code == 202
    assert r.json()["accepted"] == 2
    assert [(e["index"], e["error"].split(":")[0]) for e in r.json()["errors"]] == [(2, "invalid_json"), (4, "too_large")]


def test_ndjson_line_numbers_hold_without_blank_lines_and_with_a_last_line_unterminated(sidecar):
    big = b'{"type": "x", "pad": "' + b"p" * 70_000 + b'"}\n'
    body = ndjson(event()) + b"oops\n" + big + ndjson(event()) + b'{"agent": "x"}'
    r = post(sidecar, body, "application/x-ndjson")
    assert r.json()["accepted"] == 2
    assert [(e["index"], e["error"].split(":")[0]) for e in r.json()["errors"]] == [(1, "invalid_json"), (2, "too_large"), (4, "missing_type")]


def test_a_large_ndjson_body_is_parsed_whole_and_reports_errors_by_line_number(sidecar):
    """An NDJSON body of protocol.BLOCK_MIN_BYTES or more stays one LineBlock: a usual one is
    parsed in one call, an unusual one line by line, with the same line numbers as a small body."""
    import time

    from sidecar.protocol import BLOCK_MIN_BYTES

    now = time.time()
    good = b"".join(ndjson(event(agent=f"a{i % 3}", i=i, timestamp=now)) for i in range(1000))
    assert len(good) >= BLOCK_MIN_BYTES
    decoder = sidecar.sidecar.decoder
    wholes = []
    parse = decoder._decode_lines
    decoder._decode_lines = lambda data: wholes.append(1) or parse(data)
    try:
        before = sidecar.sidecar.pipeline.processed
        r = post(sidecar, good, "application/x-ndjson")
        assert (r.status_code, r.json()["accepted"], wholes) == (202, 1000, [1])
        odd = good + b"\n  \n" + b"oops\n" + ndjson(event(timestamp=now)) + b'{"agent": "x"}'  # blank lines, a bad one, no last newline
        r = post(sidecar, odd, "application/x-ndjson")
    finally:
        decoder._decode_lines = parse
    assert r.json()["accepted"] == 1001
    assert [(e["index"], e["error"].split(":")[0]) for e in r.json()["errors"]] == [(1002, "invalid_json"), (1004, "missing_type")]
    sidecar.wait_processed(before + 2001)


def test_ndjson_without_its_content_type_is_still_understood(sidecar):
    r = post(sidecar, ndjson(event(), event(), event()))
    assert r.json()["accepted"] == 3


def test_nothing_valid_is_a_400_with_the_same_shape(sidecar):
    r = post(sidecar, b"[1, 2]")
    assert r.status_code == 400
    assert r.json()["accepted"] == 0 and r.json()["rejected"] == 2
    r = post(sidecar, b"   ")
    assert r.status_code == 400 and r.json()["errors"][0]["error"] == "invalid_json: empty body"
    r = post(sidecar, b"[1, 2")
    assert r.status_code == 400 and "not a valid JSON array" in r.json()["errors"][0]["error"]


def test_errors_are_capped_at_100_but_counted_exactly(sidecar):
    r = post(sidecar, json.dumps([{"bad": i} for i in range(250)] + [event()]))
    assert r.status_code == 202
    assert (r.json()["accepted"], r.json()["rejected"], len(r.json()["errors"])) == (1, 250, 100)
    assert sidecar.value("sidecar_events_rejected_total", {"transport": "http", "reason": "missing_type"}) == 250


def test_body_over_the_limit_is_413():
    with running_sidecar(**{"ingest.max_body_bytes": "1KiB", "ingest.max_event_bytes": "1KiB"}) as s:
        r = post(s, json.dumps([event(pad="x" * 100) for _ in range(20)]))
        assert r.status_code == 413 and "max_body_bytes" in r.json()["errors"][0]["error"]

        def chunks():  # no Content-Length: the limit applies while streaming
            for _ in range(10):
                yield b" " * 500

        r = httpx.post(s.url + "/v1/events", content=chunks())
        assert r.status_code == 413
        assert s.value("sidecar_events_rejected_total", {"transport": "http", "reason": "too_large"}) == 2
        assert post(s, json.dumps(event())).status_code == 202  # still serving


def test_compressed_bodies_are_refused_clearly(sidecar):
    r = post(sidecar, gzip.compress(json.dumps(event()).encode()), **{"content-encoding": "br"})
    assert r.status_code == 415


@pytest.mark.parametrize("header, status", [(None, 401), ("Bearer wrong", 401), ("Basic s3cret", 401), ("Bearer s3cret", 202)])
def test_bearer_token_is_required_when_configured(header, status):
    with running_sidecar(**{"auth.token": "s3cret"}) as s:
        headers = {"authorization": header} if header else {}
        r = post(s, json.dumps(event()), **headers)
        assert r.status_code == status
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"


def test_full_queue_answers_503_with_retry_after_and_counts_the_drop():
    with running_sidecar(**{"ingest.queue_size": 1}) as s:
        stalled = asyncio.Event()

        async def stall():  # stop the pipeline task so the queue fills, as under overload
            for task in asyncio.all_tasks():
                if task.get_name() == "pipeline":
                    task.cancel()
            stalled.set()

        asyncio.run_coroutine_threadsafe(stall(), s.loop).result(5)
        assert post(s, json.dumps([event(), event()])).status_code == 202
        r = post(s, json.dumps([event(), event(), {"bad": 1}]))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["dropped"] == 2 and "queue_full" in r.json()["error"]
        assert s.value("sidecar_events_dropped_total", {"reason": "queue_full"}) == 2
        received = s.value("sidecar_events_received_total", {"transport": "http"})
        accepted = s.value("sidecar_events_accepted_total", {"transport": "http"})
        rejected = s.value("sidecar_events_rejected_total", {"transport": "http", "reason": "missing_type"})
        assert received == accepted + rejected + 2 == 5


def metric(url: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", httpx.get(url + "/metrics").text, re.M)
    return float(m[1]) if m else 0.0


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson", "text/plain"])
def test_max_event_bytes_bounds_every_event_whatever_its_framing(spawn, content_type):
    """Issue 14, defect 6: an array item or a single object used to be bounded by max_body_bytes only."""
    proc = spawn(config="ingest:\n  max_event_bytes: 1KiB\n")
    big = event(agent="big", payload="x" * 2000)  # ~2 KiB: over the limit however it is framed
    small = [event(agent=f"small-{i}") for i in range(2)]
    if content_type == "application/x-ndjson":
        body = ndjson(small[0], big, small[1])
    else:
        body = json.dumps([small[0], big, small[1]]).encode()
    r = httpx.post(proc.url + "/v1/events", content=body, headers={"content-type": content_type})
    assert r.status_code == 202
    assert (r.json()["accepted"], r.json()["rejected"]) == (2, 1)
    assert r.json()["errors"][0]["index"] == 1 and r.json()["errors"][0]["error"].startswith("too_large: ")
    alone = httpx.post(proc.url + "/v1/events", content=json.dumps(big), headers={"content-type": content_type})
    assert alone.status_code == 400 and alone.json()["errors"][0]["error"].startswith("too_large: ")
    assert metric(proc.url, "sidecar_events_rejected_total", '{reason="too_large",transport="http"}') == 2
    assert metric(proc.url, "sidecar_events_accepted_total", '{transport="http"}') == 2
