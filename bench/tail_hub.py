"""The tail hub's Python cost per message, without sockets: consume + writer pass.

    python bench/tail_hub.py [--batches 50] [--events 800]

An in-process `TailHub` with 1,000 clients each filtered to one agent of 100 plus 10 on the
whole stream, each on a wire that writes nowhere; `--batches` batches of `--events` decoded
events go through `consume` and then the writer pass until nothing is pending. Prints the
CPU per batch of each and the writer pass's CPU per write (one system call on a real socket,
which is what this leaves out: see tail_write_floor.py for that part).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sidecar.config import TailConfig
from sidecar.protocol import EventDecoder
from sidecar.sinks.tail import TailHub, parse_filter
from sidecar.types import Batch


class NullWire:
    on_writable = None
    write_paused = False

    def __init__(self) -> None:
        self.writes = 0

    def is_open(self) -> bool:
        return True

    def write_frame(self, frame: bytes) -> None:
        self.writes += 1

    def write_frames(self, frames: list[bytes]) -> None:
        self.writes += 1


async def run(n_batches: int, n_events: int) -> None:
    hub = TailHub(TailConfig())
    wires = [NullWire() for _ in range(1010)]
    for i, wire in enumerate(wires):
        flt = parse_filter([("agent", f"agent-{i % 100:02d}")] if i < 1000 else [])
        hub.connect(None, flt, 0.0, wire=wire)  # type: ignore[arg-type]
    rnd = random.Random(1)
    lines = [
        b'{"type":"llm.call","agent":"agent-%02d","workflow":"code_review","model":"gpt-4o","run_id":"run-%d","duration_ms":12.5}'
        % (rnd.randrange(100), i)
        for i in range(n_events)
    ]
    decoder = EventDecoder()
    batches = []
    for _ in range(n_batches):
        events, raws, _ = decoder.decode(lines, time.time())
        batches.append(Batch(events, raws, time.time(), "bench"))
    t_consume = t_pass = 0.0
    for batch in batches:
        t0 = time.process_time()
        hub.consume(batch)
        t1 = time.process_time()
        while hub._pending:
            hub._pass_armed = False
            hub._write_pass()
        t_pass += time.process_time() - t1
        t_consume += t1 - t0
    writes = sum(w.writes for w in wires)
    print(f"{n_batches * n_events:,} events, {writes:,} writes: consume {t_consume / n_batches * 1e3:.2f} ms per batch, "
          f"writer pass {t_pass / n_batches * 1e3:.2f} ms per batch = {t_pass / writes * 1e6:.2f} us per write "
          f"(no system call); load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--events", type=int, default=800)
    args = ap.parse_args()
    asyncio.run(run(args.batches, args.events))


if __name__ == "__main__":
    main()
