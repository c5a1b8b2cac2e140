"""Content-Encoding: gzip on POST /v1/events, with ingest.max_body_bytes applied after decompression."""

import gzip
import json
import tracemalloc
import zlib

import httpx
import pytest

from sidecar.testing import event, ndjson, running_sidecar

LIMIT = 1024 * 1024


def post(s, body, encoding="gzip", content_type="application/x-ndjson"):
    return httpx.post(s.url + "/v1/events", content=body, headers={"content-type": content_type, "content-encoding": encoding})


def bomb(inflated: int) -> bytes:
    """A gzip body of `inflated` zero bytes, built without holding them all."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [z.compress(block) for _ in range(inflated // len(block))]
    return b"".join(parts) + z.compress(bytes(inflated % len(block))) + z.flush()


def test_gzip_ndjson_body_is_accepted_and_counted(sidecar):
    r = post(sidecar, gzip.compress(ndjson(event(agent="gz"), event(agent="gz"), {"agent": "no type"})))
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["rejected"]) == (2, 1)
    sidecar.wait_processed(2)
    assert sidecar.value("sidecar_events_received_total", {"transport": "http"}) == 3


def test_gzip_json_array_and_concatenated_members_are_one_body(sidecar):
    body = gzip.compress(b"[" + json.dumps(event()).encode()) + gzip.compress(b"," + json.dumps(event()).encode() + b"]")
    r = post(sidecar, body, "x-gzip", "application/json")
    assert (r.status_code, r.json()["accepted"]) == (202, 2)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"this is not gzip", "body is not valid gzip"),
        (gzip.compress(ndjson(event()))[:-12], "gzip body is truncated"),
    ],
)
def test_broken_gzip_is_a_400_bad_encoding_and_counted(sidecar, body, message):
    r = post(sidecar, body)
    assert r.status_code == 400
    assert r.json()["errors"][0]["error"].startswith("bad_encoding: " + message)
    assert sidecar.value("sidecar_events_rejected_total", {"transport": "http", "reason": "bad_encoding"}) == 1


def test_unknown_content_encoding_is_a_415_naming_it(sidecar):
    r = post(sidecar, b"{}", "br")
    assert r.status_code == 415 and "'br'" in r.json()["errors"][0]["error"]
    assert sidecar.value("sidecar_events_rejected_total", {"transport": "http", "reason": "bad_encoding"}) == 1


def test_limit_applies_to_the_decompressed_size():
    line = json.dumps(event(pad="x" * 1000)).encode() + b"\n"
    body = line * (LIMIT // len(line))  # just under the limit once inflated; tiny on the wire
    with running_sidecar(**{"ingest.max_body_bytes": LIMIT}) as s:
        assert post(s, gzip.compress(body)).status_code == 202
        r = post(s, gzip.compress(body + line))
        assert r.status_code == 413 and "after decompression" in r.json()["errors"][0]["error"]


def test_gzip_bomb_gets_413_without_the_sidecars_memory_following_it():
    compressed = bomb(128 * 1024 * 1024)  # 128 MiB of zeros in ~130 KB
    assert len(compressed) < LIMIT
    with running_sidecar(**{"ingest.max_body_bytes": LIMIT}) as s:
        tracemalloc.start()
        try:
            r = post(s, compressed)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        print(f"gzip bomb: {len(compressed)} bytes on the wire, traced peak {peak / 2**20:.1f} MiB")
        assert r.status_code == 413
        assert peak < 8 * LIMIT  # the request body, one limit's worth of output, and slack; not 128 MiB
        assert post(s, gzip.compress(ndjson(event()))).status_code == 202  # still serving
