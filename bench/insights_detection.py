"""Detection rate of /v1/insights on the demo's injected faults, and false findings on `healthy`.

Each run simulates `--history` of the demo (24 concurrent workflows) for one scenario and seed,
stamped so that it ends now, decodes it with the sidecar's own decoder, files it in the insights
store and applies the rules with the default thresholds (window 5m, baseline 20m here, so one run
takes a second). A fault counts as found when a finding above info has the expected kind and
subject; a healthy run counts every finding above info as false. The same pipeline runs against a
real sidecar in tests/test_insights.py; this script only repeats it over many seeds.

    PYTHONPATH=$PWD python3 bench/insights_detection.py [--seeds 20]
"""

from __future__ import annotations

import argparse
import json
import time

from sidecar.commands.demo import SCENARIOS, Simulation, history, scenario
from sidecar.config import Config
from sidecar.insights import find
from sidecar.protocol import EventDecoder
from sidecar.sinks.insights import InsightsStore
from sidecar.types import Batch

SPAN, WINDOW, WORKFLOWS = 1200.0, 300.0, 24
# Abandonment needs lifecycle.abandon_after (1h by default) to pass within the simulated time: these
# runs use 6m (longer than any healthy run of the demo, ~5 min at most) and 6m more history than the
# baseline, so that the store has watched the whole baseline for runs that could be abandoned in it;
# the fault starts 6m before the window, so its first runs are abandoned as the window opens
# (README, "Named faults").
ABANDON_AFTER = 360.0
SHORT_ABANDON = ("abandoned_runs", "healthy (abandon_after 6m)")


def run(name: str, seed: int, span: float = SPAN, window: float = WINDOW, abandon_after: float | None = None) -> list[dict]:
    """The findings (docs) for one scenario and seed."""
    now = time.time()
    before = 0.0 if abandon_after is None else abandon_after
    sim = Simulation(seed, WORKFLOWS, fault=scenario(name, onset=span - window))
    lines = list(history(sim, span + before, now))
    config = Config().replace(**{"insights.window": window, "insights.baseline": span})
    store = InsightsStore(config.insights, clock=lambda: now, abandon_after=3600.0 if abandon_after is None else abandon_after)
    events, _, _ = EventDecoder().decode(lines, now)
    store.consume(Batch(events, lines, now, "bench"))
    store.maintain(now)
    return [f.doc() for f in find(store.snapshot(window, span), config.insights).findings]


def matches(finding: dict, kind: str, subject: dict[str, str]) -> bool:
    return finding["kind"] == kind and finding["severity"] != "info" and all(finding["subject"].get(k) == v for k, v in subject.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    for label in [*SCENARIOS, SHORT_ABANDON[1]]:
        name = label.split(" ")[0]
        found = false = 0
        for seed in range(args.seeds):
            findings = run(name, seed, abandon_after=ABANDON_AFTER if label in SHORT_ABANDON else None)
            above = [f for f in findings if f["severity"] != "info"]
            if name == "healthy":
                false += len(above)
                if args.verbose and above:
                    print(seed, json.dumps(above))
            else:
                expect = SCENARIOS[name].expect
                assert expect is not None
                hit = any(matches(f, expect[0], dict(expect[1])) for f in findings)
                found += hit
                if args.verbose and not hit:
                    print(name, seed, json.dumps([(f["kind"], f["subject"], f["summary"]) for f in findings]))
        if name == "healthy":
            print(f"{label:28s} false findings above info: {false} in {args.seeds} runs")
        else:
            print(f"{label:28s} found {found}/{args.seeds} ({found / args.seeds:.0%})")


if __name__ == "__main__":
    main()
