"""WS /v1/tail against a real sidecar (uvicorn in a thread) with the real websockets client."""

import asyncio
import json
import time

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sidecar.testing import event, ndjson, running_sidecar

LIVENESS = 10  # seconds: only so a broken server fails the test instead of hanging it

EVENTS = [
    event("llm.call", agent="planner", workflow="w1", model="m1", run_id="r1"),
    event("llm.stream", agent="coder", workflow="w2", model="m2", run_id="r2", severity="warning"),
    event("tool.call", agent="coder", workflow="w1", severity="debug", tool="search"),
    event("agent.failed", agent="agent.x", workflow="w2", run_id="r1"),
    event("llm.call", agent="reviewer", severity="critical", model="m1"),
]


def ws_url(s, query: str = "") -> str:
    return s.url.replace("http://", "ws://") + "/v1/tail" + (f"?{query}" if query else "")


async def send(s, *events) -> None:
    before = s.sidecar.pipeline.processed
    await asyncio.to_thread(s.send_unix, ndjson(*events))
    await asyncio.to_thread(s.wait_processed, before + len(events))


async def next_message(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), LIVENESS))


async def collect(ws, n: int) -> tuple[list[dict], int]:
    """Receive batches until `n` events (received + dropped) are accounted for."""
    got, dropped = [], 0
    while len(got) + dropped < n:
        msg = await next_message(ws)
        got += msg["events"]
        dropped += msg["dropped"]
    return got, dropped


async def drain(ws) -> list[dict]:
    """Every event queued for `ws` so far: a reply follows the events queued before it."""
    await ws.send(json.dumps({"op": "resume"}))
    got = []
    while "op" not in (msg := await next_message(ws)):
        got += msg["events"]
    assert msg == {"op": "resumed"}
    return got


def as_sent(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "received_at"} for e in events]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", [0, 1, 2, 3, 4]),
        ("agent=planner", [0]),
        ("agent=planner&agent=coder", [0, 1, 2]),
        ("agent=c*", [1, 2]),
        ("agent=agent.*", [3]),
        ("type=llm.*", [0, 1, 4]),
        ("type=llm.*&agent=coder", [1]),
        ("type=*.failed&type=tool.call", [2, 3]),
        ("workflow=w1", [0, 2]),
        ("severity=warning", [1, 3, 4]),
        ("severity=error&workflow=w2", [3]),
        ("model=m1", [0, 4]),
        ("tool=search", [2]),
        ("run_id=r1&run_id=r2&agent=coder", [1]),
        ("agent=nobody", []),
    ],
)
async def test_query_string_filters_select_events(sidecar, query, expected):
    async with connect(ws_url(sidecar, query)) as ws:
        await send(sidecar, *EVENTS)
        assert as_sent(await drain(ws)) == [EVENTS[i] for i in expected]


async def test_each_event_is_the_object_as_sent_plus_received_at(sidecar):
    line = b'{"type": "llm.call",  "agent": "a", "payload": {"nested": [1, 2.50, "\\u00e9"]}, "custom": null}'
    async with connect(ws_url(sidecar)) as ws:
        before = sidecar.sidecar.pipeline.processed
        await asyncio.to_thread(sidecar.send_unix, line + b"\n")
        await asyncio.to_thread(sidecar.wait_processed, before + 1)
        raw = await asyncio.wait_for(ws.recv(), LIVENESS)
    message = msgspec.json.decode(raw.encode(), type=dict[str, list[msgspec.Raw] | int])
    (spliced,) = message["events"]
    assert bytes(spliced).startswith(line[:-1] + b',"received_at":')
    assert json.loads(bytes(spliced))["received_at"] > 1_700_000_000
    assert message["dropped"] == 0


async def test_subscribe_replaces_the_filter_and_is_acked(sidecar):
    async with connect(ws_url(sidecar, "agent=planner")) as ws:
        await ws.send(json.dumps({"op": "subscribe", "filter": {"agent": ["coder"], "severity": "warning"}}))
        assert await next_message(ws) == {"op": "subscribed", "filter": {"agent": ["coder"], "severity": "warning"}}
        await send(sidecar, *EVENTS)
        got, _ = await collect(ws, 1)
        assert [e["type"] for e in got] == ["llm.stream"]
        await ws.send(json.dumps({"op": "subscribe", "filter": {}, "interval_ms": 50}))
        assert await next_message(ws) == {"op": "subscribed", "filter": {}, "interval_ms": 50}
        for _ in range(3):  # sends closer together than the interval are coalesced, none lost
            await send(sidecar, *EVENTS)
        got, _ = await collect(ws, 3 * len(EVENTS))
        assert as_sent(got) == EVENTS * 3


@pytest.mark.parametrize(
    "message, error",
    [
        ("not json", "message must be a JSON object"),
        ("[1, 2]", "message must be a JSON object"),
        ('{"op": "dance"}', "unknown op 'dance' (expected subscribe, pause or resume)"),
        ('{"op": "subscribe", "filter": {"colour": "red"}}', "unknown filter key 'colour'"),
        ('{"op": "subscribe", "filter": "agent=a"}', "filter must be a JSON object"),
        ('{"op": "subscribe", "filter": {"severity": "loud"}}', "filter severity: 'loud' is not one of"),
        ('{"op": "subscribe", "filter": {}, "interval_ms": -5}', "interval_ms must be an integer"),
        ('{"op": "subscribe", "filter": {"agent": "coder", "agent": "planner"}}', "duplicate key 'agent' in the message"),
        (json.dumps({"op": "subscribe", "filter": {"agent": [f"*{i}" for i in range(17)]}}), "at most 16 globs"),
    ],
)
async def test_bad_message_gets_an_error_and_the_connection_stays_open(sidecar, message, error):
    async with connect(ws_url(sidecar, "agent=planner")) as ws:
        await ws.send(message)
        reply = await next_message(ws)
        assert reply["op"] == "error" and error in reply["error"]
        await send(sidecar, *EVENTS)  # the old filter still applies
        got, _ = await collect(ws, 1)
        assert [e["agent"] for e in got] == ["planner"]


@pytest.mark.parametrize(
    "query, error",
    [
        ("colour=red", "unknown filter key 'colour'"),
        ("severity=loud", "filter severity: 'loud'"),
        ("interval_ms=soon", "interval_ms must be an integer"),
        ("interval_ms=%C2%B2", "interval_ms must be an integer from 0 to 60000, not '²'"),  # was a 1006 close
        ("interval_ms=%D9%A1%D9%A2", "interval_ms must be an integer"),
        ("interval_ms=5&agent=a&interval_ms=6", "interval_ms is given 2 times; give it once"),
        ("token=a&token=b", "token is given 2 times"),
        ("&".join(f"agent=*{i}" for i in range(17)), "at most 16 globs"),
        ("type=" + "*" * 129, "filter type: a glob is longer than 128 characters"),
    ],
)
async def test_bad_query_filter_refuses_the_handshake_with_400(sidecar, query, error):
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(sidecar, query)):
            pass
    assert info.value.response.status_code == 400
    assert error in json.loads(info.value.response.body)["error"]


async def test_glob_matching_costs_a_bounded_amount_per_event_whatever_the_filter_and_values(sidecar):
    # 15 globs as costly as the bound allows, then one that matches. Against 60,000-character
    # values a regex over the whole value took ~0.8 s per event here: 200 events would be minutes.
    worst = [("*" + "a" * 126 + c) for c in "bcdefghijklmnop"]
    heavy = [event("llm.call", agent="a" * 60_000, i=i) for i in range(200)]
    async with connect(ws_url(sidecar, "&".join(f"agent={g}" for g in [*worst, "a*"]))) as ws:
        await ws.send(json.dumps({"op": "subscribe", "filter": {"agent": [*worst, "a*"], "type": worst}}))
        assert (await next_message(ws))["op"] == "error"  # 30 globs: over the bound, the old filter stays
        for start in range(0, len(heavy), 50):
            await send(sidecar, *heavy[start : start + 50])
        got, dropped = await collect(ws, len(heavy))
    assert dropped == 0 and [e["i"] for e in got] == list(range(200))
    assert sidecar.value("sidecar_sink_events_dropped_total", {"sink": "tail", "reason": "splice_failed"}) is None


async def test_a_batch_with_an_event_that_broke_the_splice_reaches_every_client_whole(sidecar):
    odd = b'{"type": "llm.call", "agent": "odd", "received_at": 1, "payload": {"score": 1e999}}'
    lines = [ndjson(event(agent=f"a{i}", i=i)).rstrip(b"\n") for i in range(100)]
    lines.insert(50, odd)
    async with connect(ws_url(sidecar)) as everything, connect(ws_url(sidecar, "agent=odd&agent=a1")) as some:
        before = sidecar.sidecar.pipeline.processed
        await asyncio.to_thread(sidecar.send_unix, b"\n".join(lines) + b"\n")  # one read: one batch
        await asyncio.to_thread(sidecar.wait_processed, before + 101)
        got, _ = await collect(everything, 101)
        assert [e.get("i") for e in got] == [*range(50), None, *range(50, 100)]
        assert got[50]["received_at"] > 1_700_000_000 and got[50]["payload"] == {"score": float("inf")}
        got, _ = await collect(some, 2)
        assert [e["agent"] for e in got] == ["a1", "odd"]
    assert sidecar.value("sidecar_events_processed_total") == sidecar.value("sidecar_events_accepted_total", {"transport": "unix"})


async def test_events_of_a_read_parsed_whole_reach_the_tail_byte_for_byte(sidecar):
    """A read of 48 KiB or more is parsed as one array and kept unsplit (protocol.LineBlock): the
    tail still gets each event as its line was sent, in order, and only the ones it asked for."""
    from sidecar.protocol import BLOCK_MIN_BYTES

    now = time.time()  # stamped: a usual batch, kept unsplit (an unstamped one goes line by line)
    lines = [ndjson(event(agent=f"a{i % 5}", i=i, timestamp=now, payload={"n": {"text": "x" * (i % 80)}})).rstrip(b"\n") for i in range(1000)]
    data = b"\n".join(lines) + b"\n"
    assert len(data) >= 2 * BLOCK_MIN_BYTES
    decoder, tail = sidecar.sidecar.decoder, sidecar.sidecar.sinks.tail
    wholes, kept = [], []
    parse, consume = decoder._decode_lines, tail.consume
    decoder._decode_lines = lambda data: wholes.append(len(data)) or parse(data)
    tail.consume = lambda batch: kept.append(type(batch.raws).__name__) or consume(batch)
    async with connect(ws_url(sidecar)) as everything, connect(ws_url(sidecar, "agent=a3")) as some:
        before = sidecar.sidecar.pipeline.processed
        try:
            await asyncio.to_thread(sidecar.send_unix, data)
            await asyncio.to_thread(sidecar.wait_processed, before + 1000)
        finally:
            decoder._decode_lines, tail.consume = parse, consume
        assert wholes and "LineBlock" in kept  # at least one read was parsed whole, and kept unsplit
        got = []
        while len(got) < 1000:
            message = msgspec.json.decode((await asyncio.wait_for(everything.recv(), LIVENESS)).encode(), type=dict[str, list[msgspec.Raw] | int])
            got += [bytes(raw) for raw in message["events"]]  # type: ignore[union-attr]
        assert [raw.rsplit(b',"received_at":', 1)[0] for raw in got] == [line[:-1] for line in lines]
        some_got, _ = await collect(some, 200)
        assert [e["i"] for e in some_got] == list(range(3, 1000, 5))


async def test_a_client_queue_is_bounded_in_bytes_as_well_as_events():
    n, pad = 100, "x" * 4000
    with running_sidecar(**{"tail.client_queue_bytes": 100 * 1024}) as s:
        async with connect(ws_url(s)) as ws:
            await ws.send(json.dumps({"op": "pause"}))
            assert await next_message(ws) == {"op": "paused"}
            await send(s, *[event(i=i, pad=pad) for i in range(n)])
            await ws.send(json.dumps({"op": "resume"}))
            got, dropped = await collect(ws, n)
    assert sum(len(json.dumps(e)) for e in got) <= 100 * 1024 and dropped > 0
    assert [e["i"] for e in got] == list(range(n - len(got), n))  # the newest kept, in order
    assert len(got) + dropped == n and s.value("sidecar_tail_dropped_total") == dropped


async def test_no_reply_is_lost_to_a_client_that_reads_late():
    n, pad = 2000, "x" * 8000  # 16 MB: more than the socket buffers hold, so our sender blocks
    with running_sidecar() as s:
        async with connect(ws_url(s, "agent=big"), max_queue=1) as ws:
            await send(s, *[event(agent="big", pad=pad) for _ in range(n)])
            requests = 3 * 64  # three times the replies the sidecar keeps waiting for one client
            for i in range(requests):
                await ws.send(json.dumps({"op": "subscribe", "filter": {"agent": "big"}, "interval_ms": i}))
            acks = []
            while len(acks) < requests:
                message = await next_message(ws)
                if message.get("op"):
                    acks.append(message)
    assert [a["interval_ms"] for a in acks[1:]] == list(range(1, requests))
    assert all(a["op"] == "subscribed" for a in acks)


async def test_paused_client_gets_nothing_until_resumed_then_the_backlog(sidecar):
    async with connect(ws_url(sidecar)) as ws:
        await ws.send(json.dumps({"op": "pause"}))
        assert await next_message(ws) == {"op": "paused"}
        await send(sidecar, *EVENTS)
        await ws.send("{}")  # while paused, replies still flow and no events come before them
        assert (await next_message(ws))["op"] == "error"
        assert as_sent(await drain(ws)) == EVENTS


async def test_client_that_never_reads_does_not_slow_ingest_or_others_and_is_told_what_it_missed():
    n, pad = 4000, "x" * 4000  # 16 MB: more than the socket buffers hold, so the stuck sender blocks
    with running_sidecar(**{"tail.client_queue": 500}) as s:
        async with connect(ws_url(s), max_queue=1) as stuck, connect(ws_url(s, "agent=good")) as good:
            # the stuck client reads nothing while everything is ingested and the good one reads
            good_events = []
            for start in range(0, n, 200):
                await send(s, *[event(agent="good", i=i, pad=pad) for i in range(start, start + 200)])
                got, good_dropped = await collect(good, 200)
                assert good_dropped == 0
                good_events += got
            assert s.sidecar.pipeline.processed == n  # ingest finished while `stuck` was stuck
            assert [e["i"] for e in good_events] == list(range(n))
            got, dropped = await asyncio.wait_for(collect(stuck, n), LIVENESS * 3)
            assert dropped > 0 and len(got) + dropped == n
            assert s.value("sidecar_tail_dropped_total") == dropped
            assert [e["i"] for e in got] == sorted(e["i"] for e in got)  # the oldest were dropped, order kept


async def test_beyond_max_clients_the_connection_is_closed_with_1013():
    with running_sidecar(**{"tail.max_clients": 2}) as s:
        async with connect(ws_url(s)) as first, connect(ws_url(s)) as second:
            assert await drain(first) == [] and await drain(second) == []  # both registered
            assert s.value("sidecar_tail_clients") == 2
            async with connect(ws_url(s)) as third:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(third.recv(), LIVENESS)
                assert third.close_code == 1013
                assert "tail.max_clients (2) reached" in third.close_reason


@pytest.mark.parametrize("key", ["tail.token", "auth.token"])
async def test_token_is_required_by_header_or_query(key):
    with running_sidecar(**{key: "s3cret"}) as s:
        for query, headers in (("", None), ("token=wrong", None), ("", {"Authorization": "Bearer wrong"})):
            with pytest.raises(InvalidStatus) as info:
                async with connect(ws_url(s, query), additional_headers=headers):
                    pass
            assert info.value.response.status_code == 401
        async with connect(ws_url(s, "token=s3cret")) as ws:
            assert await drain(ws) == []
        async with connect(ws_url(s), additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert await drain(ws) == []


async def test_tail_token_takes_precedence_over_auth_token():
    with running_sidecar(**{"auth.token": "ingest", "tail.token": "viewer"}) as s:
        with pytest.raises(InvalidStatus):
            async with connect(ws_url(s, "token=ingest")):
                pass
        async with connect(ws_url(s, "token=viewer")) as ws:
            assert await drain(ws) == []


async def test_browser_origins_other_than_our_own_or_allowed_are_refused():
    with running_sidecar(**{"tail.allowed_origins": ["https://dash.example"]}) as s:
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(s), origin="https://evil.example"):
                pass
        assert info.value.response.status_code == 403
        assert "origin https://evil.example is not allowed" in info.value.response.body.decode()
        port = int(s.url.rsplit(":", 1)[1])
        for other in (f"http://127.0.0.1:{port + 1}", "http://127.0.0.1"):
            with pytest.raises(InvalidStatus) as info:  # our host on another port: another origin
                async with connect(ws_url(s), origin=other):
                    pass
            assert info.value.response.status_code == 403, other
        for origin in (s.url, "https://dash.example"):
            async with connect(ws_url(s), origin=origin) as ws:
                assert await drain(ws) == []


async def test_a_client_arriving_during_shutdown_is_closed_with_1001(sidecar):
    sidecar.call(lambda: setattr(sidecar.sidecar.sinks.tail, "closing", True))
    async with connect(ws_url(sidecar)) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), LIVENESS)
    assert ws.close_code == 1001


async def test_shutdown_closes_clients_with_1001():
    with running_sidecar() as s:
        ws = await connect(ws_url(s))
        assert await drain(ws) == []
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), LIVENESS)
    assert ws.close_code == 1001
    await ws.close()


async def test_large_events_are_split_so_no_message_exceeds_a_default_client_limit(sidecar):
    pad = "x" * 60_000
    async with connect(ws_url(sidecar)) as ws:  # websockets' default max_size is 1 MiB
        await send(sidecar, *[event(agent="big", i=i, pad=pad) for i in range(40)])
        got = []
        while len(got) < 40:
            raw = await asyncio.wait_for(ws.recv(), LIVENESS)
            assert len(raw) <= 1 << 20
            got += json.loads(raw)["events"]
    assert [e["i"] for e in got] == list(range(40))


async def test_a_query_token_never_reaches_the_log(caplog):
    caplog.set_level("INFO", logger="uvicorn.error")
    with running_sidecar(**{"tail.token": "s3cret-value"}) as s:
        async with connect(ws_url(s, "agent=a&token=s3cret-value")) as ws:
            assert await drain(ws) == []
    assert "WebSocket /v1/tail?agent=a&token=<redacted>" in caplog.text
    assert "s3cret-value" not in caplog.text


async def test_a_client_that_answers_pings_stays_connected():
    # A pong must come within the interval: 250 ms, not less, so that a busy CI machine pausing this
    # process's threads for a moment does not read as a client that stopped answering.
    with running_sidecar(**{"tail.ping_interval": 0.25}) as s:
        async with connect(ws_url(s)) as ws:  # websockets answers pings by itself
            await asyncio.sleep(1.0)  # four keepalive rounds of real time: uvicorn's timers are not ours
            await send(s, *EVENTS)
            assert as_sent(await drain(ws)) == EVENTS
