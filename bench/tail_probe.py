"""`agent-sidecar run` with a probe on the live tail's socket writes (benchmarks only).

    TAIL_PROBE=/tmp/ages.bin python -m ... (see tail_common.start_sidecar)

For every message written to a client's socket it records now - the `received_at` of the
message's newest event (the last one in the frame): how long the freshest event of each
message spent inside the sidecar (intake queue, pipeline, its client queue, the wait for a
writer pass) before the write. The client side records receive - the same stamp, so the
difference is the kernel's and the client process's share. Written at exit as doubles.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from array import array

from sidecar.api.tail_wire import TailWireProtocol
from sidecar.sinks.tail import TailHub
from sidecar.types import Batch, SinkDrops

ages = array("d")
consumed = array("d")  # per batch: when the hub got it - its received_at (intake queue, other sinks)
_consume = TailHub.consume


def consume(self: TailHub, batch: Batch) -> SinkDrops | None:
    consumed.append(time.time() - batch.received_at)
    return _consume(self, batch)
_write_frame = TailWireProtocol.write_frame
_write_frames = getattr(TailWireProtocol, "write_frames", None)  # not before 2026-11-30 late
KEY = b'"received_at":'


def record(frame: bytes) -> None:
    at = frame.rfind(KEY, max(0, len(frame) - 80))
    if at >= 0:
        end = frame.find(b"}", at)
        ages.append(time.time() - float(frame[at + len(KEY) : end]))


def write_frame(self: TailWireProtocol, frame: bytes) -> None:
    record(frame)
    _write_frame(self, frame)


def write_frames(self: TailWireProtocol, frames: list[bytes]) -> None:
    for frame in frames:
        record(frame)
    assert _write_frames is not None
    _write_frames(self, frames)


def dump() -> None:
    with open(os.environ["TAIL_PROBE"], "wb") as f:
        ages.tofile(f)
    with open(os.environ["TAIL_PROBE"] + ".consume", "wb") as f:
        consumed.tofile(f)


TailHub.consume = consume  # type: ignore[method-assign]
TailWireProtocol.write_frame = write_frame  # type: ignore[method-assign]
if _write_frames is not None:
    TailWireProtocol.write_frames = write_frames  # type: ignore[method-assign]
atexit.register(dump)

if __name__ == "__main__":
    from sidecar.cli import main

    sys.exit(main())
