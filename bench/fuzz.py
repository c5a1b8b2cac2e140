"""The long fuzz run of the decoder, the line framer and the HTTP body splitter.

    python bench/fuzz.py [--inputs 1000000] [--seed 0]

Generates truncated, mutated and spliced valid events, random bytes, deep nesting,
huge numbers (400 digits, 1e999, each field's limit and just past it, the float limit),
ids with control characters and other non-hex, very long values, large single objects,
invalid UTF-8, BOMs, CRLF and NUL bytes (see `tests/fuzzing.py`) and checks every
invariant on each, including that both exposition formats render with finite values and
valid exemplars. Prints inputs/s and every crash (an escaped
exception or a broken invariant); crashing inputs are written to
bench/fuzz-crashes/ for reproduction. Exit status 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "tests"))
import fuzzing as fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"# {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; seed {args.seed}")
    stats = fuzz.run(
        args.inputs,
        args.seed,
        progress=lambda s: print(f"  {s.inputs:>9,} inputs  {s.inputs / s.seconds:>8,.0f}/s  crashes {len(s.crashes)}", flush=True),
    )
    print(f"inputs: {stats.inputs:,} in {stats.seconds:.1f}s = {stats.inputs / stats.seconds:,.0f} inputs/s")
    print(f"accepted: {stats.accepted:,}; rejected: {sum(stats.rejected.values()):,} " + str(dict(sorted(stats.rejected.items()))))
    print(f"crashes: {len(stats.crashes)}")
    if stats.crashes:
        out = os.path.join(REPO, "bench", "fuzz-crashes")
        os.makedirs(out, exist_ok=True)
        for i, crash in enumerate(stats.crashes[:100]):
            with open(os.path.join(out, f"crash-{args.seed}-{i}.bin"), "wb") as f:
                f.write(b"\n".join(crash.inputs))
        for (where, error), n in collections.Counter((c.where, c.error[:160]) for c in stats.crashes).most_common(20):
            print(f"  {n:>6} x {where}: {error}")
        print(f"inputs of the first 100 written to {out}/")
    return 1 if stats.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
