"""The tail's direct send path: frames byte-identical to websockets' own, and the real route
(uvicorn + TailWireProtocol) handing the hub its wire."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from sidecar.sinks.tail import text_frame
from sidecar.testing import event, ndjson, running_sidecar


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000, 1 << 20])
def test_text_frame_is_what_websockets_would_send(size):
    payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def test_the_real_route_writes_to_the_socket_and_a_client_gets_text_frames():
    with running_sidecar() as s:
        url = s.url.replace("http://", "ws://") + "/v1/tail"

        async def run() -> list[object]:
            async with connect(url, max_size=None) as ws, connect(url + "?agent=b", max_size=None) as other:
                await asyncio.to_thread(s.send_unix, ndjson(event(agent="a", pad="z" * 60_000), event(agent="b")))
                frames = [await asyncio.wait_for(ws.recv(), 10)]
                while sum(len(json.loads(f)["events"]) for f in frames) < 2:  # type: ignore[arg-type]
                    frames.append(await asyncio.wait_for(ws.recv(), 10))
                frames.append(await asyncio.wait_for(other.recv(), 10))
                hub = s.sidecar.sinks.tail
                wires = s.call(lambda: [(c.wire is not None, c.sender is None) for c in hub.clients])
                assert wires == [(True, True), (True, True)]  # no sender task: the writer pass serves them
                return frames

        frames = asyncio.run(run())
    assert all(isinstance(f, str) for f in frames)  # text frames, as the page and the CLI expect
    events = [e for f in frames[:-1] for e in json.loads(f)["events"]]  # type: ignore[arg-type]
    assert [e["agent"] for e in events] == ["a", "b"] and len(events[0]["pad"]) == 60_000
    assert [e["agent"] for e in json.loads(frames[-1])["events"]] == ["b"]  # type: ignore[arg-type]


def test_a_backlog_goes_out_in_one_write_as_messages_within_max_batch_then_the_reply():
    with running_sidecar(**{"tail.max_batch": 5}) as s:
        url = s.url.replace("http://", "ws://") + "/v1/tail"
        writes: list[int] = []

        def count_writes() -> None:
            (client,) = s.sidecar.sinks.tail.clients
            wire = client.wire
            write_frames = wire.write_frames

            def counted(frames: list[bytes]) -> None:
                writes.append(len(frames))
                write_frames(frames)

            wire.write_frames = counted

        async def run() -> list[dict[str, object]]:
            async with connect(url) as ws:
                await ws.send(json.dumps({"op": "pause"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"op": "paused"}
                s.call(count_writes)
                await asyncio.to_thread(s.send_unix, ndjson(*[event(agent="a", n=i) for i in range(12)]))
                while s.call(lambda: len(next(iter(s.sidecar.sinks.tail.clients)).queue)) < 12:
                    await asyncio.sleep(0.01)
                await ws.send(json.dumps({"op": "resume"}))
                return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4)]

        messages = asyncio.run(run())
    assert [len(m["events"]) for m in messages[:3]] == [5, 5, 2]  # type: ignore[arg-type]
    assert [e["n"] for m in messages[:3] for e in m["events"]] == list(range(12))  # type: ignore[attr-defined]
    assert messages[3] == {"op": "resumed"}
    assert writes == [4]  # the three messages and the reply: one write
