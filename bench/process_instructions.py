"""Instructions per event of a whole `agent-sidecar run` process ingesting over its Unix socket,
counted by valgrind's callgrind, which other processes' load does not move.

    python bench/process_instructions.py [--events 30000] [--annotate]
    SIDECAR_REPO=/path/to/other/checkout python bench/process_instructions.py

bench/sink_instructions.py counts the decoder and the sinks on batches made in advance; this counts
everything else too: the socket reads and their copies, framing, the event loop, the pipeline,
freeing each batch. The sidecar runs under valgrind, takes 20,000 events to warm up, then counting
is switched on (`callgrind_control -i on`) for `--events` more, sent as bench/ingest.py's client
sends them (1,000-line writes). Under valgrind the process runs ~50x slower, so its periodic work
(the 1 s maintain, uvicorn's 0.1 s tick) is measured alone for 20 s and subtracted for the time the
events took. `--annotate` prints callgrind_annotate's top functions for the counted part.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds, realistic_lines, send_ndjson  # noqa: E402

REPO = os.environ.get("SIDECAR_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WARM, IDLE_SECONDS = 20_000, 20.0


def chunks(lines: list[bytes]) -> list[bytes]:
    return [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--annotate", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, REPO)
    from sidecar.testing import SIDECAR_COMMAND, SidecarProcess

    lines = realistic_lines(WARM + args.events)
    out = tempfile.mkdtemp(prefix="callgrind-")
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/cg.%p", *SIDECAR_COMMAND]

    def control(*flags: str) -> None:
        subprocess.run(["callgrind_control", *flags], check=True, capture_output=True)

    def counted(pid: int) -> tuple[int, str]:
        """The instructions since the last dump, and the dump's file (a dump zeroes the counters)."""
        before = set(glob.glob(f"{out}/cg.*"))
        control("-d", str(pid))
        deadline = time.monotonic() + 60
        while not (new := sorted(set(glob.glob(f"{out}/cg.*")) - before)):
            if time.monotonic() > deadline:
                raise SystemExit(f"callgrind wrote no dump to {out} within 60 s")
            time.sleep(0.2)
        time.sleep(0.5)  # written in full
        for line in open(new[0]):
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]), new[0]
        raise SystemExit(f"no totals in {new[0]}")

    with tempfile.TemporaryDirectory() as tmp:
        env = {"PYTHONPATH": REPO, "PYTHONHASHSEED": "0"}
        proc = SidecarProcess(["--http", "127.0.0.1:0", "--unix", os.path.join(tmp, "s.sock")], env, command=command, ready_timeout=300)

        def settled() -> None:  # done with what it was sent: the CPU it uses falls to its idle ticks
            last = cpu_seconds(proc.pid)
            while True:
                time.sleep(3)
                now = cpu_seconds(proc.pid)
                if now - last < 1.0:
                    return
                last = now

        try:
            send_ndjson(proc.unix, chunks(lines[:WARM]))
            settled()
            control("-i", "on", str(proc.pid))
            counted(proc.pid)
            t0 = time.monotonic()
            time.sleep(IDLE_SECONDS)
            idle_rate = counted(proc.pid)[0] / (time.monotonic() - t0)
            t0 = time.monotonic()
            send_ndjson(proc.unix, chunks(lines[WARM:]))
            settled()
            busy, dump = counted(proc.pid)
            took = time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(300)
    per_event = (busy - idle_rate * took) / args.events
    print(f"{REPO}: {args.events:,} events in {took:.0f} s under valgrind: {busy:,} instructions, idle {idle_rate:,.0f}/s")
    print(f"instructions per event: {per_event:,.0f} (without the idle part: {busy / args.events:,.0f})")
    if args.annotate:
        report = subprocess.run(["callgrind_annotate", "--inclusive=no", dump], capture_output=True, text=True).stdout
        print("\n".join(report.splitlines()[:70]))


if __name__ == "__main__":
    main()
