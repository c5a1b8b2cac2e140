"""The live tail's direct send path at scale, on real `agent-sidecar run` processes with real
websockets clients: order and exact counts per client, slow readers beside fast ones, and
shutdown with 1000 clients connected."""

import asyncio
import json
import signal
import socket

import httpx

from test_tail_shutdown import raw_client
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from sidecar.testing import event, ndjson

LIVENESS = 60  # seconds: only so a broken server fails the test instead of hanging it (1000 clients on a busy box)
PAD = "x" * 2000


def tail_url(proc, query: str = "") -> str:
    return proc.url.replace("http://", "ws://") + "/v1/tail" + (f"?{query}" if query else "")


def send_events(proc, events: list[dict]) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(proc.unix)
        s.sendall(ndjson(*events))


async def receive(ws: ClientConnection, n: int) -> tuple[list[dict], int]:
    """Messages until `n` events are accounted for (received, or reported in `dropped`)."""
    got: list[dict] = []
    dropped = 0
    while len(got) + dropped < n:
        msg = json.loads(await asyncio.wait_for(ws.recv(), LIVENESS))
        got += msg["events"]
        dropped += msg["dropped"]
    return got, dropped


def raw_receive(sock: socket.socket, protocol: ClientProtocol, n: int) -> tuple[list[dict], int]:
    """`receive` for a sans-I/O client that has not read anything until now."""
    got: list[dict] = []
    dropped = 0
    while len(got) + dropped < n:
        data = sock.recv(1 << 20)
        assert data, f"connection closed with {len(got)} received + {dropped} dropped of {n}"
        protocol.receive_data(data)
        for frame in protocol.events_received():
            if isinstance(frame, Frame) and frame.opcode is Opcode.TEXT:
                msg = json.loads(frame.data)
                got += msg["events"]
                dropped += msg["dropped"]
    return got, dropped


def stalled_client(proc) -> tuple[socket.socket, ClientProtocol]:
    """A whole-stream client that completes the handshake, then reads nothing until the test
    says so; its receive buffer is small, so the sidecar's writes to it back up soon."""
    sock, protocol = raw_client(proc.url)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock, protocol


def test_a_thousand_clients_each_get_their_events_in_order_and_all_close_with_1001_on_sigterm(spawn):
    proc = spawn(config="shutdown_grace: 5s\ntail:\n  max_clients: 1010\n")
    agents = 10
    queries = [f"agent=a{i % agents}" for i in range(1000)]
    events = [event(agent=f"a{i % agents}", seq=i) for i in range(2000)]

    async def run() -> tuple[list[list[int]], list[int], list[int | None]]:
        clients = []
        for q in queries:  # one at a time: a burst of 1000 handshakes is not what this tests
            clients.append(await connect(tail_url(proc, q), open_timeout=LIVENESS, max_size=None))
        await asyncio.to_thread(send_events, proc, events)
        results = await asyncio.gather(*(receive(ws, len(events) // agents) for ws in clients))
        proc.proc.send_signal(signal.SIGTERM)

        async def close_code(ws: ClientConnection) -> int | None:
            try:
                await asyncio.wait_for(ws.recv(), LIVENESS)
            except ConnectionClosed:
                pass
            return ws.close_code

        codes = await asyncio.gather(*(close_code(ws) for ws in clients))
        return [[e["seq"] for e in got] for got, _ in results], [d for _, d in results], codes

    seqs, dropped, codes = asyncio.run(run())
    for i, got in enumerate(seqs):
        assert got == [s for s in range(len(events)) if s % agents == i % agents], f"client {i} got its events out of order or some twice"
    assert dropped == [0] * len(queries)
    assert codes == [1001] * len(queries)
    assert proc.wait(timeout=LIVENESS) == 0  # (a second SIGTERM would cut shutdown short)
    assert "closing 1000 live-tail client(s) with 1001" in proc.output
    assert "Cancel" not in proc.output  # uvicorn never had to cut a connection off at shutdown_grace


def test_a_stalled_client_beside_fast_ones_is_told_exactly_what_it_missed(spawn):
    """Same filter, so the fast ones share one framed message while the stalled one drops its
    oldest: fast clients get everything in order; the stalled one, once it reads, accounts for
    every event it matched (received + dropped), in order, and the drops are the counter's."""
    # No keepalive close meanwhile: the stalled client answers no ping until it reads.
    proc = spawn(config="tail:\n  client_queue: 1000\n  ping_interval: 600s\n")
    total, chunk = 4000, 200  # 8 MB of events: far past the stalled client's queue and buffers

    async def run() -> tuple[list[tuple[list[dict], int]], list[dict], int]:
        fast = [await connect(tail_url(proc), max_size=None) for _ in range(5)]
        # Default buffers: the sidecar's send buffer and the queue fill all the same, and the read at
        # the end is not held to one 8 KB window per 200 ms TCP persist probe (160 s with a 4 KB one).
        sock, protocol = raw_client(proc.url)
        with sock:
            fast_got: list[tuple[list[dict], int]] = [([], 0) for _ in fast]
            for start in range(0, total, chunk):  # the fast ones keep up: the test waits for them
                await asyncio.to_thread(send_events, proc, [event(agent="a", seq=i, pad=PAD) for i in range(start, start + chunk)])
                for k, ws in enumerate(fast):
                    got, dropped = await receive(ws, chunk)
                    fast_got[k] = (fast_got[k][0] + got, fast_got[k][1] + dropped)
            stalled, stalled_dropped = await asyncio.to_thread(raw_receive, sock, protocol, total)
        for ws in fast:
            await ws.close()
        return fast_got, stalled, stalled_dropped

    fast_got, stalled, stalled_dropped = asyncio.run(run())
    for got, dropped in fast_got:
        assert dropped == 0 and [e["seq"] for e in got] == list(range(total))
    seqs = [e["seq"] for e in stalled]
    assert stalled_dropped > 0 and len(seqs) + stalled_dropped == total
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] == total - 1  # drop-oldest: the newest is always kept
    metrics = httpx.get(proc.url + "/metrics").text
    assert f"sidecar_tail_dropped_total {float(stalled_dropped)}" in metrics


def test_a_client_that_stops_reading_mid_message_does_not_hold_up_the_next_message_to_another(spawn):
    """A message larger than the stalled client's socket buffers (30 events of 60 KB, under
    ingest.max_event_bytes) is written to it in part; the fast client on the same stream still
    gets it, then each next one: the writer skips a client whose buffer is full instead of
    waiting on it."""
    proc = spawn()

    async def run() -> list[dict]:
        async with connect(tail_url(proc), max_size=None) as fast:
            sock, _ = stalled_client(proc)
            with sock:
                await asyncio.to_thread(send_events, proc, [event(agent="big", pad="y" * 60_000) for _ in range(30)])
                first, _ = await receive(fast, 30)
                for i in range(3):  # each write to the stalled client now finds its buffer full
                    await asyncio.to_thread(send_events, proc, [event(agent="small", seq=i)])
                    got, dropped = await receive(fast, 1)
                    assert dropped == 0
                    first += got
                return first

    got = asyncio.run(run())
    assert [e["agent"] for e in got] == ["big"] * 30 + ["small"] * 3 and [e.get("seq") for e in got[30:]] == [0, 1, 2]
