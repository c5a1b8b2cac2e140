"""How fast `agent-sidecar demo` can generate its realistic stream into a real sidecar (Unix socket).

    python bench/demo_rate.py [--seconds 5]

The demo is asked for far more than it can make (--rate 1e7), so it sends as fast as its
simulation and JSON encoding allow; the figure is lines/s sent, checked against the
sidecar's own sidecar_events_received_total, beside the ceiling probe of the same run.
It says whether the demo can double as a load generator (it cannot saturate the sidecar).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ceiling_limit, child_env, machine, scrape_value, start_sidecar  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = start_sidecar(tmp)
        try:
            demo = subprocess.run(
                [sys.executable, "-m", "sidecar", "demo", "--unix", sidecar.unix, "--rate", "1e7",
                 "--duration", str(args.seconds), "--seed", "1", "--workflows", "50"],
                capture_output=True, text=True, env={**os.environ, **child_env()}, check=True,
            )
            m = re.search(r"sent (\d+) lines .* in ([\d.]+)s", demo.stderr)
            sent, took = int(m[1]), float(m[2])
            deadline = time.monotonic() + 30
            while scrape_value(sidecar.url, "sidecar_events_received_total") < sent and time.monotonic() < deadline:
                time.sleep(0.1)
            received = scrape_value(sidecar.url, "sidecar_events_received_total")
        finally:
            sidecar.terminate()
            sidecar.wait(20)
    rate = sent / took
    limit = ceiling_limit()
    print(machine())
    print(f"demo: {sent} lines in {took:.1f}s = {rate:,.0f} lines/s (sidecar received {received:.0f})")
    print(f"ceiling.py limit = {limit:,.0f} events/s; demo / limit = {rate / limit:.3f}")


if __name__ == "__main__":
    main()
