"""A plain synchronous script reporting to agent-sidecar.

    agent-sidecar run &                       # in another terminal
    python examples/plain_script.py
    curl -s localhost:8765/metrics | grep agent_

The Emitter finds the sidecar through AGENT_SIDECAR_SOCKET / AGENT_SIDECAR_URL, else the
default socket /tmp/agent-sidecar.sock. If no sidecar runs, nothing breaks: the events are
buffered, then dropped and counted.
"""

import random
import time

from sidecar.client import Emitter

emitter = Emitter(session_id="demo-session")

# One-off events: anything with a dotted lower-case type.
for i in range(20):
    started = time.perf_counter()
    time.sleep(random.uniform(0.001, 0.01))  # pretend to call a tool
    emitter.emit("tool.called", agent="researcher", duration_ms=(time.perf_counter() - started) * 1000, payload={"tool": "search", "i": i})

emitter.emit("llm.call", agent="researcher", model="gpt-4o-mini", input_tokens=1200, output_tokens=300, cost_usd=0.0009)

# A workflow run with two agent invocations: started/completed events with ids and durations.
with emitter.workflow("summarise") as run:
    with run.agent("researcher", model="gpt-4o-mini") as inv:
        time.sleep(0.02)
        inv.record_tokens(input=2000, output=150)
        inv.record_cost(0.0012)
    with run.agent("writer", model="gpt-4o") as inv:
        time.sleep(0.03)
        inv.record_tokens(input=900, output=600)
        inv.record_cost(0.0150)

# A failing invocation: agent.failed with error="TimeoutError"; the exception is still ours.
try:
    with emitter.agent("fetcher"):
        raise TimeoutError("upstream took too long")
except TimeoutError:
    pass

delivered = emitter.close(timeout=5)
print(f"delivered={delivered} {emitter.stats()} run_id={run.run_id} trace_id={run.trace_id}")
