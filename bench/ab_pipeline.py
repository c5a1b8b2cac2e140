"""A/B of the hot path in one process: variants take the same reads in turn, read by read.

    python bench/ab_pipeline.py --variant now --variant by_sinks bench/variants/numbered_by_sinks.py [--rounds 6] [--payload]

A variant is a name and optionally a Python file whose `setup(decoder, sinks)` changes that
variant's own decoder or sinks (an instance attribute, never the class, which every variant
shares); without a file it runs this checkout as it is. Each round builds every variant fresh
(its framer, decoder and the app's sinks, as `agent-sidecar run` builds them), then hands each
one bench/ingest.py's realistic events, 1,000 lines per read: frame, decode, every sink's
`consume`, in the pipeline's order; the order of the variants is reversed on every other read.
Time per event is summed per variant over the round, then the sinks' `maintain`.

Variants are built, and read first, in turn: whichever is built last reads faster (~2%, an A/A
run), so use an even number of rounds and read the mean difference it prints.

Why read by read: this VM's speed drifts by up to 2x within minutes, so variants run one after
the other (bench/ab_cpu.py) differ by more than most changes do. Taking turns every millisecond
puts every drift on both sides. What it does not see: the listener's reads and the event loop
(bench/ab_cpu.py runs real processes), and the caches each variant's tables take from the other.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, realistic_lines  # noqa: E402

sys.path.insert(0, REPO)
from prometheus_client import CollectorRegistry  # noqa: E402

from sidecar.app import build_sinks  # noqa: E402
from sidecar.commands.run import tune_collector  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.pricing import Pricer  # noqa: E402
from sidecar.protocol import EventDecoder, LineFramer  # noqa: E402
from sidecar.types import Batch  # noqa: E402

Setup = Callable[[EventDecoder, object], None]


def load_setup(path: str) -> Setup:
    spec = importlib.util.spec_from_file_location(os.path.basename(path).removesuffix(".py"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    setup: Setup = module.setup
    return setup


def build(setup: Setup | None) -> tuple[Callable[[bytes], None], Callable[[], None]]:
    """A variant's (take one read, run maintenance)."""
    config, registry = Config(), CollectorRegistry()
    sinks = build_sinks(config, registry, time.time)
    decoder = EventDecoder(config.ingest.max_clock_skew, Pricer(config.pricing, registry), sinks.metrics.label_sets)  # as build_app wires it
    framer = LineFramer(config.ingest.max_event_bytes)
    if setup is not None:
        setup(decoder, sinks)
    stages = sinks.in_order()  # the pipeline's order

    def take(read: bytes) -> None:
        lines, _ = framer.feed_block(read)
        now = time.time()
        events, raws, _, numbered = decoder.decode_numbered(lines, now)  # as the Unix listener does
        batch = Batch(events, raws, now, "unix", numbered)
        for sink in stages:
            sink.consume(batch)

    def maintain() -> None:
        for sink in stages:
            sink.maintain(time.time())

    return take, maintain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [SETUP.py]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--payload", action="store_true", help="each event also carries a small payload with a list in it")
    args = ap.parse_args()
    tune_collector()  # as `agent-sidecar run` does
    if any(len(v) > 2 for v in args.variant):
        ap.error("--variant takes NAME [SETUP.py]")
    setups = {v[0]: load_setup(v[1]) if len(v) == 2 else None for v in args.variant}
    lines = realistic_lines(args.events, payload=args.payload)
    reads = [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
    names = list(setups)
    per_event: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    print(f"{REPO}: {args.events:,} events per round, reads of 1,000 lines; µs per event")
    for r in range(args.rounds):
        # Built, and maintained, in turn too: in an A/A run the variant built last read ~2% faster
        # in most rounds when the order stayed the same (BENCHMARKS.md, 2026-12-02 19:35-20:40).
        order = names if r % 2 == 0 else names[::-1]
        built = {name: build(setups[name]) for name in order}
        took = dict.fromkeys(names, 0.0)
        for i, read in enumerate(reads):
            for name in order if i % 2 == 0 else reversed(order):
                t0 = clock()
                built[name][0](read)
                took[name] += clock() - t0
        for name in order:
            t0 = clock()
            built[name][1]()
            took[name] += clock() - t0
        for name in names:
            per_event[name].append(took[name] / args.events * 1e6)
        print(f"round {r + 1}: " + "  ".join(f"{name} {per_event[name][-1]:.2f}" for name in names), flush=True)
    for name in names:
        runs = ", ".join(f"{v:.2f}" for v in sorted(per_event[name]))
        print(f"{name}: median {statistics.median(per_event[name]):.2f} µs/event, runs {runs}")
    first = names[0]
    for name in names[1:]:
        # Round by round, since the VM's speed moves every round; with an even number of rounds
        # each variant was built last (see above) in half of them.
        diffs = [b - a for a, b in zip(per_event[first], per_event[name])]
        share = statistics.mean(diffs) / statistics.mean(per_event[first])
        faster = sum(d < 0 for d in diffs)
        print(f"{name} - {first}: mean {statistics.mean(diffs):+.2f} µs/event ({share:+.1%}), faster in {faster} of {len(diffs)} rounds")


if __name__ == "__main__":
    main()
