"""A small multi-agent workflow: planner -> coder <-> reviewer, with retries and failures.

    agent-sidecar run &
    python examples/multi_agent_workflow.py            # RUNS=20 workflows by default
    curl -s localhost:8765/metrics | grep -E 'agent_(workflow_runs|errors|tokens|cost_usd)_total'
    curl -s 'localhost:8765/v1/stats'                  # exact rolling windows, where that feature is enabled
    agent-sidecar tail                                 # the live stream, where that feature is enabled

Every workflow run is `workflow.started` then `workflow.completed` or `workflow.failed`;
every agent call inside it is `agent.invoked` then `agent.completed` / `agent.failed`,
sharing the run's run_id and trace_id (or the active OpenTelemetry span's).
"""

import os
import random
import time

from sidecar.client import Emitter

RUNS = int(os.environ.get("RUNS", "20"))
PRICES = {"gpt-4o": (2.5e-6, 10e-6), "gpt-4o-mini": (0.15e-6, 0.6e-6)}  # USD per input / output token


class ReviewRejected(Exception):
    """The reviewer sent the change back too many times."""


def llm(inv, model: str, prompt_tokens: int) -> None:
    """Pretend to call a model: some latency, tokens and their cost on the invocation."""
    time.sleep(random.uniform(0.001, 0.01))
    output = random.randint(50, 800)
    inv.record_tokens(input=prompt_tokens, output=output)
    price_in, price_out = PRICES[model]
    inv.record_cost(prompt_tokens * price_in + output * price_out)


def review_cycle(emitter: Emitter, run) -> None:
    with run.agent("planner", model="gpt-4o") as inv:
        llm(inv, "gpt-4o", 1500)
    for attempt in range(3):
        with run.agent("coder", model="gpt-4o") as inv:
            llm(inv, "gpt-4o", 4000)
            emitter.emit("tool.called", agent="coder", workflow=run.name, run_id=run.run_id, duration_ms=random.uniform(5, 80), payload={"tool": "run_tests"})
            if random.random() < 0.1:
                raise TimeoutError("the sandbox did not answer")
        with run.agent("reviewer", model="gpt-4o-mini") as inv:
            llm(inv, "gpt-4o-mini", 3000)
            if random.random() < 0.6:
                return
    raise ReviewRejected(f"rejected after {attempt + 1} attempts")


def main() -> None:
    emitter = Emitter()
    outcomes = {"completed": 0, "failed": 0}
    for _ in range(RUNS):
        try:
            with emitter.workflow("code_review") as run:
                review_cycle(emitter, run)
            outcomes["completed"] += 1
        except (TimeoutError, ReviewRejected):
            outcomes["failed"] += 1  # already reported as workflow.failed with its error type
    emitter.close(timeout=5)
    print(outcomes, emitter.stats())


if __name__ == "__main__":
    main()
