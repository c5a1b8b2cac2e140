"""Config reload in a sidecar running in this process: each key declared live reaches the part
that uses it (seen from outside: over HTTP, the socket, the tail), and what is declared."""

import asyncio
import json
import os
import re
import socket

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sidecar.config import Config, leaves
from sidecar.reload import Outcome, compare
from sidecar.testing import FakeClock, RunningSidecar, event, ndjson, running_sidecar, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVENESS = 10


def reload_to(s: RunningSidecar, **changes: object) -> Outcome:
    """Reload `s` as if its file now said `changes` (dotted keys) on top of what it started with."""
    target = s.config.replace(**changes)
    s.sidecar.reloader.source = lambda: target
    outcome: Outcome = s.call(lambda: s.sidecar.reloader.reload("test"))
    assert outcome.ok, outcome.problems
    return outcome


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(LIVENESS)
    return sock.recv(1) == b""


def ws_url(s: RunningSidecar, query: str = "") -> str:
    return s.url.replace("http://", "ws://") + "/v1/tail" + (f"?{query}" if query else "")


def test_the_live_keys_are_declared_once_and_include_what_operators_rotate():
    live = {key for key, _, meta in leaves(Config()) if meta.get("live")}
    assert {
        "auth.token", "log.level", "metrics.max_series_per_metric", "metrics.series_ttl", "lifecycle.abandon_after",
        "tail.max_clients", "tail.client_queue", "tail.allowed_origins", "tail.token", "web.enabled", "web.max_rows",
        "ingest.header_timeout", "ingest.max_body_bytes", "shutdown_grace",
    } <= live
    # What the running process cannot change without rebinding or rebuilding its state.
    assert not live & {"listen.http", "listen.unix", "listen.unix_mode", "windows.durations", "metrics.duration_buckets", "ingest.queue_size"}


def test_the_readme_lists_exactly_the_live_keys():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    listed = re.search(r"<!-- live keys -->(.*?)<!-- /live keys -->", readme, re.S)
    assert listed, "README has no live-keys list"
    assert set(re.findall(r"`([a-z_.]+)`", listed[1])) == {key for key, _, meta in leaves(Config()) if meta.get("live")}


def test_compare_takes_live_keys_and_keeps_the_others():
    running = Config()
    loaded = running.replace(**{"log.level": "debug", "windows.durations": [30.0], "auth.token": "s"})
    config, applied, restart = compare(running, loaded)
    assert [c.key for c in applied] == ["auth.token", "log.level"]
    assert [c.key for c in restart] == ["windows.durations"]
    assert config == running.replace(**{"log.level": "debug", "auth.token": "s"})
    assert [c.describe() for c in applied] == ["auth.token (changed)", 'log.level: "info" -> "debug"']
    assert compare(running, running) == (running, [], [])


def test_a_live_key_that_would_clash_with_a_kept_one_refuses_the_whole_reload():
    with running_sidecar() as s:
        # Valid as a file, but max_event_bytes needs a restart: 64 KiB events in 32 KiB bodies.
        target = s.config.replace(**{"ingest.max_body_bytes": 32 * 1024, "ingest.max_event_bytes": 16 * 1024, "log.level": "debug"})
        s.sidecar.reloader.source = lambda: target
        outcome = s.call(lambda: s.sidecar.reloader.reload("test"))
        assert outcome.problems == [
            "ingest.max_event_bytes: must not exceed ingest.max_body_bytes "
            "(with ingest.max_event_bytes kept at the running value until a restart)"
        ]
        assert s.sidecar.config == s.config  # not even log.level changed
        assert s.value("sidecar_config_last_reload_successful") == 0


def test_a_lowered_series_cap_folds_new_series_into_overflow():
    with running_sidecar() as s:
        s.send_unix(ndjson(event(agent="a1"), event(agent="a2")))
        s.wait_processed(2)
        reload_to(s, **{"metrics.max_series_per_metric": 2})
        s.send_unix(ndjson(event(agent="a3"), event(agent="a1")))
        s.wait_processed(4)
        labels = {"type": "llm.call", "workflow": "", "severity": "info"}
        assert s.value("agent_events_total", {**labels, "agent": "a1"}) == 2  # existing series stay
        assert s.value("agent_events_total", {**labels, "agent": "a3"}) is None
        assert s.value("sidecar_series_overflow_total", {"metric": "agent_events"}) == 1


def test_a_shorter_ttl_and_abandon_timeout_apply_from_the_next_sweep():
    clock = FakeClock()
    with running_sidecar(clock=clock) as s:
        s.send_unix(ndjson(event("workflow.started", workflow="w", run_id="r1"), event(agent="old")))
        s.wait_processed(2)
        reload_to(s, **{"metrics.series_ttl": 60.0, "lifecycle.abandon_after": 30.0})
        sweep = lambda: s.call(lambda: s.sidecar.pipeline.maintain(clock()))  # noqa: E731
        sweep()  # notes every series as seen now
        clock.advance(120)
        sweep()
        assert s.value("agent_workflow_runs_total", {"workflow": "w", "outcome": "abandoned"}) == 1
        assert s.value("agent_events_total", {"type": "llm.call", "agent": "old", "workflow": "", "severity": "info"}) is None
        assert s.value("sidecar_series_expired_total", {"metric": "agent_events"}) >= 1


def test_ingest_limits_apply_to_the_next_request_and_connection():
    with running_sidecar(**{"ingest.header_timeout": 60.0}) as s:
        big = [event(agent="x" * 100)] * 1000  # 130 KB
        assert httpx.post(s.url + "/v1/events", json=big).status_code == 202
        ahead = event(timestamp=s.sidecar.clock() + 120)
        assert httpx.post(s.url + "/v1/events", json=ahead).status_code == 202
        reload_to(s, **{"ingest.max_body_bytes": 64 * 1024, "ingest.max_clock_skew": 60.0, "ingest.header_timeout": 0.2})
        assert httpx.post(s.url + "/v1/events", json=big).status_code == 413
        r = httpx.post(s.url + "/v1/events", json={**ahead, "timestamp": s.sidecar.clock() + 120})
        assert r.status_code == 400 and "future_timestamp" in r.text
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as silent:
            assert closed_by_peer(silent)
        assert s.value("sidecar_http_header_timeouts_total") == 1


def answer_of(sock: socket.socket) -> bytes:
    sock.settimeout(LIVENESS)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_http_guard_limits_apply_to_the_next_connection_and_body():
    with running_sidecar() as s:
        reload_to(s, **{"ingest.body_timeout": 0.3, "ingest.max_http_connections": 3, "tail.max_clients": 1})
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            assert answer_of(slow).startswith(b"HTTP/1.1 408 ")
        wait_until(lambda: s.value("sidecar_http_body_timeouts_total") == 1, "the 408 counted")
        held = [socket.create_connection((host, int(port))) for _ in range(3)]
        try:
            with socket.create_connection((host, int(port))) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert answer_of(extra).startswith(b"HTTP/1.1 503 ")
        finally:
            for sock in held:
                sock.close()
        assert s.value("sidecar_http_connections_refused_total") == 1


def test_unix_listener_limits_apply_without_reconnecting_anyone():
    clock = FakeClock()
    with running_sidecar(clock=clock) as s:
        with socket.socket(socket.AF_UNIX) as quiet:
            quiet.connect(s.unix)
            wait_until(lambda: s.value("sidecar_unix_connections") == 1, "the client")
            reload_to(s, **{"ingest.idle_timeout": 30.0})
            clock.advance(31)
            asyncio.run_coroutine_threadsafe(s.sidecar.listeners[0].maintain(), s.loop).result(LIVENESS)
            assert closed_by_peer(quiet)
        assert s.value("sidecar_unix_connections_idle_closed_total") == 1


def test_the_page_follows_web_enabled_and_max_rows():
    with running_sidecar() as s:
        assert httpx.get(s.url + "/").status_code == 200
        reload_to(s, **{"web.enabled": False})
        assert httpx.get(s.url + "/").status_code == 404
        assert httpx.get(s.url + "/web/app.js").status_code == 404
        reload_to(s, **{"web.max_rows": 250})
        page = httpx.get(s.url + "/")
        assert page.status_code == 200 and '<meta name="sidecar-max-rows" content="250">' in page.text
        assert httpx.get(s.url + "/web/app.js").status_code == 200
        # The ETag follows the content, so a browser does not keep the old page.
        reload_to(s, **{"web.max_rows": 300})
        assert httpx.get(s.url + "/", headers={"If-None-Match": page.headers["etag"]}).status_code == 200


async def test_tail_limits_origins_and_token_apply_at_the_next_handshake():
    with running_sidecar() as s:
        async with connect(ws_url(s)) as first:
            await asyncio.to_thread(reload_to, s, **{"tail.max_clients": 1, "tail.allowed_origins": ["https://dash.example"]})
            async with connect(ws_url(s)) as second:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(second.recv(), LIVENESS)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            await asyncio.to_thread(reload_to, s, **{"tail.max_clients": 5, "tail.allowed_origins": ["https://dash.example"], "tail.token": "tt"})
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(s), origin="https://dash.example"):
                    pass
            assert refused.value.response.status_code == 401
            async with connect(ws_url(s, "token=tt"), origin="https://dash.example") as third:
                await asyncio.to_thread(s.send_unix, ndjson(event(agent="both")))
                for ws in (first, third):  # the client from before the reload is still served
                    message = json.loads(await asyncio.wait_for(ws.recv(), LIVENESS))
                    assert [e["agent"] for e in message["events"]] == ["both"]


async def test_a_new_tail_client_gets_the_reloaded_batch_size():
    with running_sidecar() as s:
        await asyncio.to_thread(reload_to, s, **{"tail.max_batch": 2})
        async with connect(ws_url(s)) as ws:
            await ws.send(json.dumps({"op": "pause"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), LIVENESS)) == {"op": "paused"}
            await asyncio.to_thread(s.send_unix, ndjson(*(event(agent=f"a{i}") for i in range(5))))
            await asyncio.to_thread(s.wait_processed, 5)
            await ws.send(json.dumps({"op": "resume"}))
            sizes = []
            while sum(sizes) < 5:
                message = json.loads(await asyncio.wait_for(ws.recv(), LIVENESS))
                sizes.append(len(message.get("events", [])))
            assert max(sizes) == 2


def test_a_rotated_token_guards_every_data_route_at_once():
    with running_sidecar(**{"auth.token": "old"}) as s:
        reload_to(s, **{"auth.token": "new"})
        routes = [("GET", "/v1/stats"), ("GET", "/metrics"), ("POST", "/v1/events"), ("POST", "/v1/logs"), ("POST", "/-/reload")]
        for method, path in routes:
            for token, allowed in (("old", False), ("new", True)):
                r = httpx.request(
                    method, s.url + path, content=b"{}", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                )
                assert (r.status_code != 401) == allowed, (method, path, token, r.status_code)


async def test_a_connected_tail_client_keeps_its_queue_size_and_counts_what_it_drops():
    with running_sidecar(**{"tail.client_queue": 5}) as s:
        async with connect(ws_url(s)) as before:
            await before.send(json.dumps({"op": "pause"}))
            assert json.loads(await asyncio.wait_for(before.recv(), LIVENESS)) == {"op": "paused"}
            await asyncio.to_thread(reload_to, s, **{"tail.client_queue": 10})
            async with connect(ws_url(s)) as after:
                await after.send(json.dumps({"op": "pause"}))
                assert json.loads(await asyncio.wait_for(after.recv(), LIVENESS)) == {"op": "paused"}
                await asyncio.to_thread(s.send_unix, ndjson(*(event(agent=f"a{i}") for i in range(8))))
                await asyncio.to_thread(s.wait_processed, 8)
                for ws, kept in ((before, 5), (after, 8)):
                    await ws.send(json.dumps({"op": "resume"}))
                    got, dropped = [], 0
                    while "op" not in (message := json.loads(await asyncio.wait_for(ws.recv(), LIVENESS))):
                        got += message["events"]
                        dropped += message["dropped"]
                    assert message == {"op": "resumed"}
                    assert (len(got), dropped) == (kept, 8 - kept)
