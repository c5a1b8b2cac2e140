"""Per-event cost of decoding and of each sink's `consume`, in instructions (valgrind's callgrind),
which other processes' load does not move: the A/B figure for hot-path changes on a shared machine.

    python bench/sink_instructions.py            # this checkout
    SIDECAR_REPO=/path/to/other/checkout python bench/sink_instructions.py

bench/ingest.py's realistic events (20 agents x 5 workflows x 3 models x 8 types, a new trace id
per event), decoded into batches of 1,000; every stage is first warmed on 20 batches (series,
slots and subjects exist, as in a running sidecar), then counted over 2 and over 6 more batches,
and the difference divided by 4,000 events, so start-up and the switching cancel out. The
collector is set as `agent-sidecar run` sets it (frozen after set-up, young threshold 50,000).
`maintain`, which the pipeline runs about once a second, is not counted. Needs valgrind.

    python bench/sink_instructions.py pipeline   # every sink on each batch, in the pipeline's order

A stage alone pays what the sinks share (the label-set numbers and numeric columns, made by the
first sink that asks), so the stages' sum over-counts; `pipeline` is the figure for all of them.

    python bench/sink_instructions.py --split 880,120 pipeline
    python bench/sink_instructions.py --batch 1 pipeline

hand each 1,000 events over as batches of these sizes instead: as the Unix listener does when a
256 KiB read cuts a sender's 1,000-line write (the sinks file a short batch with the next one), or
as a quiet sender's one-event reads arrive (the sinks wait for 256 events and file them together).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import callgrind_per_unit, callgrind_switch  # noqa: E402

REPO = os.environ.get("SIDECAR_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("decode", "metrics", "window", "insights", "tail", "pipeline")
BATCH, WARM = 1000, 20


def child(stage: str, n: int) -> None:
    import gc

    sys.path[:0] = [REPO, os.path.join(REPO, "bench")]
    from common import realistic_lines
    from prometheus_client import CollectorRegistry

    from sidecar.app import build_sinks
    from sidecar.config import Config
    from sidecar.protocol import EventDecoder
    from sidecar.types import Batch

    lines = realistic_lines((WARM + n) * BATCH)
    decoder = EventDecoder()
    now = time.time()
    sizes = [int(size) for size in os.environ.get("SINK_SPLIT", str(BATCH)).split(",")]
    assert sum(sizes) == BATCH, f"--split must add up to {BATCH}"
    batches = []  # per 1,000 events, the batches they arrive in
    for at in range(0, len(lines), BATCH):
        group = []
        for size in sizes:
            events, raws, _ = decoder.decode(lines[at : at + size], now)
            group.append(Batch(events, raws, now, "bench"))
            at += size
        batches.append(group)
    built = build_sinks(Config(), CollectorRegistry(), lambda: now)
    # "pipeline": every sink on each batch in the pipeline's order, as `run` does: a cost they
    # share (the label-set numbers) is paid once, by the first to ask; each stage alone pays it.
    sinks = [] if stage == "decode" else built.in_order() if stage == "pipeline" else [getattr(built, stage)]
    for group in batches[:WARM]:
        for batch in group:
            for sink in sinks:
                sink.consume(batch)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000)
    callgrind_switch(True)
    if not sinks:
        for at in range(WARM * BATCH, len(lines), BATCH):
            decoder.decode(lines[at : at + BATCH], now)
    else:
        for group in batches[WARM:]:
            for batch in group:
                for sink in sinks:
                    sink.consume(batch)
    callgrind_switch(False)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
        return
    args = sys.argv[1:]
    if args[:1] == ["--split"]:
        os.environ["SINK_SPLIT"] = args[1]  # read by the children
        args = args[2:]
    elif args[:1] == ["--batch"]:
        size = int(args[1])
        os.environ["SINK_SPLIT"] = ",".join([str(size)] * (BATCH // size) + ([str(BATCH % size)] if BATCH % size else []))
        args = args[2:]
    stages = args or STAGES
    sizes = sorted(set(os.environ.get("SINK_SPLIT", str(BATCH)).split(",")), key=int, reverse=True)
    print(f"Python {sys.version.split()[0]}, instructions per event (callgrind, 1,000 events as batches of {', '.join(sizes)}: 6 minus 2)")
    total = 0
    for stage in stages:
        per_event = callgrind_per_unit(os.path.abspath(__file__), stage, BATCH)
        total += per_event if stage != "pipeline" else 0
        print(f"{stage}: {per_event:,}")
    print(f"sum of the stages: {total:,}")


if __name__ == "__main__":
    main()
