"""Instructions per event of a whole `agent-sidecar run` process ingesting over its Unix socket,
counted by valgrind's callgrind, which other processes' load does not move.

    python bench/process_instructions.py [--events 30000] [--annotate] [--cache]
    SIDECAR_REPO=/path/to/other/checkout python bench/process_instructions.py

bench/sink_instructions.py counts the decoder and the sinks on batches made in advance; this counts
everything else too: the socket reads and their copies, framing, the event loop, the pipeline,
freeing each batch. The sidecar runs under valgrind, takes 20,000 events to warm up, then counting
is switched on (`callgrind_control -i on`) for `--events` more, sent as bench/ingest.py's client
sends them (1,000-line writes). Under valgrind the process runs ~50x slower, so its periodic work
(the 1 s maintain, uvicorn's 0.1 s tick) is measured alone for 20 s and subtracted for the time the
events took. What the idle part cannot remove: each maintain also flushes the window store, and a
flush pays costs per key and per stored value whatever it carries; at full speed a flush comes
every ~12,000 events (16,384 pending, or the 1 s maintain), under valgrind every ~700, so those
costs weigh more here than they do at full speed. `--annotate` prints callgrind_annotate's top
functions for the counted part. `--cache` simulates the caches too (slower) and prints the
first-level data cache misses per event; `--annotate` then sorts by them.

    python bench/process_instructions.py --probe

counts `ceiling.py limit`'s server instead (its run at 90,000 events less its run at 30,000, over
the 60,000 between), for the instruction budget the issue's ratios imply; with `--cache`, its misses.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CEILING, child_env, cpu_seconds, realistic_lines, send_ndjson  # noqa: E402

REPO = os.environ.get("SIDECAR_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WARM, IDLE_SECONDS = 20_000, 20.0


def chunks(lines: list[bytes]) -> list[bytes]:
    return [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--annotate", action="store_true")
    ap.add_argument("--probe", action="store_true", help="count the ceiling probe's server instead")
    ap.add_argument("--cache", action="store_true", help="simulate the caches too; --annotate then sorts by first-level read misses")
    args = ap.parse_args()
    if args.probe:
        probe(args.cache)
        return
    sys.path.insert(0, REPO)
    from sidecar.testing import SIDECAR_COMMAND, SidecarProcess

    lines = realistic_lines(WARM + args.events)
    out = tempfile.mkdtemp(prefix="callgrind-")
    cache = ["--cache-sim=yes"] if args.cache else []
    command = ["valgrind", "--tool=callgrind", *cache, "--instr-atstart=no", f"--callgrind-out-file={out}/cg.%p", *SIDECAR_COMMAND]

    def control(*flags: str) -> None:
        subprocess.run(["callgrind_control", *flags], check=True, capture_output=True)

    def counted(pid: int) -> tuple[list[int], str]:
        """The counts since the last dump (instructions first; with --cache, the cache events
        after them), and the dump's file (a dump zeroes the counters)."""
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
                return [int(x) for x in line.split()[1:]], new[0]
        raise SystemExit(f"no totals in {new[0]}")

    with tempfile.TemporaryDirectory() as tmp:
        env = {**child_env(REPO), "PYTHONHASHSEED": "0"}
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
            idle = counted(proc.pid)[0]
            idle_seconds = time.monotonic() - t0
            t0 = time.monotonic()
            send_ndjson(proc.unix, chunks(lines[WARM:]))
            settled()
            busy, dump = counted(proc.pid)
            took = time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(300)
    per_event = [(b - i * took / idle_seconds) / args.events for b, i in zip(busy, idle)]
    print(f"{REPO}: {args.events:,} events in {took:.0f} s under valgrind: {busy[0]:,} instructions, idle {idle[0] / idle_seconds:,.0f}/s")
    print(f"instructions per event: {per_event[0]:,.0f} (without the idle part: {busy[0] / args.events:,.0f})")
    if args.cache:  # Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
        print(f"D1 misses per event: {per_event[4]:,.1f} read + {per_event[5]:,.1f} write")
    if args.annotate:
        sort = ["--show=Ir,D1mr,D1mw", "--sort=D1mr"] if args.cache else []
        report = subprocess.run(["callgrind_annotate", "--inclusive=no", *sort, dump], capture_output=True, text=True).stdout
        print("\n".join(report.splitlines()[:70]))


def probe(cache: bool) -> None:
    def server_counts(n: int) -> list[int]:
        """Ir (and with `cache`: Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw) of the probe's server."""
        sim = ["--cache-sim=yes"] if cache else []
        command = ["valgrind", "--tool=callgrind", *sim, "--callgrind-out-file=/dev/null", sys.executable, CEILING, "limit"]
        run = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, "N": str(n)})
        _, err = run.communicate()
        found = re.search(rf"=={run.pid}== Collected : ([\d ]+)", err)  # the server is the process started; its client is a child
        if run.returncode or not found:
            raise SystemExit(f"valgrind failed:\n{err[-2000:]}")
        return [int(x) for x in found[1].split()]

    low, high = 30_000, 90_000
    per_event = [(b - a) / (high - low) for a, b in zip(server_counts(low), server_counts(high))]
    print(f"{CEILING} limit, its server: {per_event[0]:,.0f} instructions per event (callgrind, {high:,} less {low:,} events)")
    if cache:
        print(f"D1 misses per event: {per_event[4]:,.1f} read + {per_event[5]:,.1f} write")


if __name__ == "__main__":
    main()
