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
