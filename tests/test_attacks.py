"""Attacks on the HTTP and WebSocket surface, each with its clear answer, the sidecar still serving."""

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sidecar.server import WS_MAX_MESSAGE
from sidecar.testing import event, ndjson, running_sidecar

TOKEN = "s3cret"


def ws_url(s, query=""):
    return s.url.replace("http://", "ws://") + "/v1/tail" + query


async def test_tail_never_negotiates_per_message_compression_even_when_offered(sidecar):
    async with connect(ws_url(sidecar), compression="deflate") as ws:  # the client offers permessage-deflate
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None


async def test_an_oversized_inbound_tail_message_closes_that_client_with_1009_and_others_are_served(sidecar):
    async with connect(ws_url(sidecar), max_size=None) as attacker, connect(ws_url(sidecar)) as other:
        await attacker.send("x" * (WS_MAX_MESSAGE + 1))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(attacker.recv(), 15)
        assert attacker.close_code == 1009  # message too big
        await asyncio.to_thread(sidecar.send_unix, ndjson(event(agent="still-served")))
        message = json.loads(await asyncio.wait_for(other.recv(), 15))
        assert message["events"][0]["agent"] == "still-served"


async def test_a_cross_origin_tail_handshake_is_refused_with_403(sidecar):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(sidecar), origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


@pytest.fixture(scope="module")
def guarded():
    with running_sidecar(**{"auth.token": TOKEN}) as s:
        yield s


@pytest.mark.parametrize(
    "method, path, body",
    [("POST", "/v1/events", json.dumps(event())), ("GET", "/v1/stats", None), ("GET", "/metrics", None)],
)
@pytest.mark.parametrize("authorization, allowed", [(None, False), ("Bearer wrong", False), (f"Basic {TOKEN}", False), (f"Bearer {TOKEN}", True)])
def test_every_http_data_route_requires_the_token_when_configured(guarded, method, path, body, authorization, allowed):
    headers = {"authorization": authorization} if authorization else {}
    r = httpx.request(method, guarded.url + path, content=body, headers=headers)
    assert (r.status_code < 300) == allowed, (r.status_code, r.text[:200])
    if not allowed:
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_the_tail_requires_the_token_when_configured(guarded):
    for query in ("", "?token=wrong"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(guarded, query)):
                pass
        assert refused.value.response.status_code == 401
    async with connect(ws_url(guarded), additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert ws.response.status_code == 101


def test_liveness_routes_stay_open_without_the_token(guarded):
    assert httpx.get(guarded.url + "/healthz").status_code == 200
    assert httpx.get(guarded.url + "/readyz").status_code == 200


@pytest.mark.parametrize(
    "method, path, body",
    [("POST", "/v1/events", json.dumps(event())), ("GET", "/v1/stats", None), ("GET", "/metrics", None)],
)
def test_a_query_token_is_refused_on_http_routes_which_take_the_header_only(guarded, method, path, body):
    """The README: `?token=` is for the WebSocket (browsers cannot set its headers) and only there;
    a token in a URL ends up in proxies' and shells' logs."""
    r = httpx.request(method, guarded.url + path + f"?token={TOKEN}", content=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    ok = httpx.request(method, guarded.url + path, content=body, headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code < 300
