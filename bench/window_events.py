"""Varied agent events for the window benchmarks: many agents, types, models and runs,
durations from a long-tailed distribution, timestamps a little out of order.

A run id spans RUN_LENGTH consecutive events, so runs enter and leave the windows as
they do in production; one identical event repeated would keep one key and one run.
"""

from __future__ import annotations

import random
from typing import Any

TYPES = ["llm.call"] * 5 + ["tool.call"] * 3 + ["agent.completed", "agent.started", "agent.failed", "tool.failed"]
AGENTS = [f"agent-{i:02d}" for i in range(24)]
WORKFLOWS = ["code_review", "triage", "research", "etl", "support"]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"]
RUN_LENGTH = 20


def varied_event(rng: random.Random, i: int, timestamp: float) -> dict[str, Any]:
    """The i-th event of a varied stream, stamped `timestamp`."""
    ev: dict[str, Any] = {
        "type": TYPES[rng.randrange(len(TYPES))], "timestamp": timestamp, "agent": AGENTS[rng.randrange(len(AGENTS))],
        "workflow": WORKFLOWS[(i // RUN_LENGTH) % len(WORKFLOWS)], "run_id": f"run-{i // RUN_LENGTH}",
        "trace_id": f"{rng.getrandbits(128):032x}", "duration_ms": round(rng.lognormvariate(6, 1.2), 1),
    }
    if ev["type"].startswith("llm"):
        ev |= {"model": MODELS[rng.randrange(len(MODELS))], "input_tokens": rng.randrange(50, 4000),
               "output_tokens": rng.randrange(10, 1000), "cost_usd": round(rng.random() * 0.05, 5)}
    if rng.random() < 0.05:
        ev["severity"] = "warning"
    return ev
