"""SIGTERM on a real `agent-sidecar run` process with live-tail clients connected."""

import asyncio
import json
import signal
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.http11 import Response
from websockets.uri import parse_uri

from sidecar.testing import event, ndjson

LIVENESS = 15


def raw_client(url: str) -> tuple[socket.socket, ClientProtocol]:
    """A WebSocket client that completes the handshake and then never answers anything."""
    uri = parse_uri(url.replace("http://", "ws://") + "/v1/tail")
    protocol = ClientProtocol(uri)
    sock = socket.create_connection((uri.host, uri.port), timeout=LIVENESS)
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while not any(isinstance(e, Response) for e in protocol.events_received()):
        protocol.receive_data(sock.recv(65536))
    return sock, protocol


def close_frame_of(sock: socket.socket, protocol: ClientProtocol) -> Close | None:
    while protocol.close_rcvd is None:
        data = sock.recv(1 << 20)
        if not data:
            protocol.receive_eof()
            break
        protocol.receive_data(data)
    return protocol.close_rcvd


@pytest.mark.untraced
def test_sigterm_closes_a_connected_tail_client_with_1001_and_exits_0(spawn):
    proc = spawn()

    async def run() -> int | None:
        async with connect(proc.url.replace("http://", "ws://") + "/v1/tail") as ws:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(proc.unix)
                s.sendall(ndjson(event(agent="a")))
            assert json.loads(await asyncio.wait_for(ws.recv(), LIVENESS))["events"][0]["agent"] == "a"
            proc.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(ws.recv(), LIVENESS)
            except ConnectionClosed:
                pass
            return ws.close_code

    assert asyncio.run(run()) == 1001
    assert proc.stop(timeout=LIVENESS) == 0
    assert "closing 1 live-tail client(s) with 1001" in proc.output


@pytest.mark.untraced
def test_sigterm_does_not_wait_for_a_client_that_never_answers_the_close(spawn):
    proc = spawn(config="shutdown_grace: 60s\n")  # were shutdown to wait for it, it would wait a minute
    sock, protocol = raw_client(proc.url)
    with sock:
        proc.proc.send_signal(signal.SIGTERM)
        close = close_frame_of(sock, protocol)
        assert proc.stop(timeout=LIVENESS) == 0
    assert close is not None and close.code == 1001
    assert "Cancel" not in proc.output  # uvicorn's "graceful shutdown exceeded" never happened


def test_sigterm_with_a_client_that_never_reads_exits_within_shutdown_grace(spawn):
    proc = spawn(config="shutdown_grace: 2s\n")
    sock, _ = raw_client(proc.url)
    with sock, socket.socket(socket.AF_UNIX) as s:
        s.connect(proc.unix)
        pad = "x" * 4000
        for _ in range(8):  # 16 MB for a reader that reads nothing: its send buffers fill
            s.sendall(ndjson(*[event(agent="a", pad=pad) for _ in range(500)]))
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.stop(timeout=LIVENESS) == 0
    assert "received=4000 accepted=4000 rejected=0 dropped=0 processed=4000 sink_dropped=0" in proc.output
    assert "1 live-tail client(s) read nothing" in proc.output


@pytest.mark.untraced
def test_a_client_that_does_not_answer_pings_is_closed_by_keepalive(spawn):
    proc = spawn(config="tail:\n  ping_interval: 200ms\n")
    sock, protocol = raw_client(proc.url)
    with sock:
        close = close_frame_of(sock, protocol)  # it never sends the pong
    assert close is not None and close.code == 1011 and close.reason == "keepalive ping timeout"
    assert proc.stop(timeout=LIVENESS) == 0


@pytest.mark.untraced
def test_an_odd_event_costs_no_tail_client_its_batch_and_the_totals_account_for_every_event(spawn):
    """Issue 14 defect 5: one accepted body the splice could not take (`received_at` set by the
    sender beside a number beyond float range) emptied the tail for its whole batch, while the
    totals called the batch processed."""
    proc = spawn()
    odd = b'{"type": "llm.call", "agent": "odd", "received_at": 1, "payload": {"n": -1e999}}\n'
    body = b"".join(ndjson(event(agent="a", i=i)) for i in range(50)) + odd + ndjson(*[event(agent="a", i=i) for i in range(50, 100)])

    async def run() -> list[list[dict]]:
        url = proc.url.replace("http://", "ws://") + "/v1/tail"
        async with connect(url) as everything, connect(url + "?agent=od*") as globbed:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(proc.unix)
                s.sendall(body)
            got: list[list[dict]] = []
            for ws, n in ((everything, 101), (globbed, 1)):
                events: list[dict] = []
                while len(events) < n:
                    events += json.loads(await asyncio.wait_for(ws.recv(), LIVENESS))["events"]
                got.append(events)
            return got

    everything, globbed = asyncio.run(run())
    assert [e.get("i") for e in everything] == [*range(50), None, *range(50, 100)]
    assert everything[50]["agent"] == "odd" == globbed[0]["agent"] and globbed[0]["received_at"] > 1
    assert proc.stop(timeout=LIVENESS) == 0
    assert "received=101 accepted=101 rejected=0 dropped=0 processed=101 sink_dropped=0" in proc.output
