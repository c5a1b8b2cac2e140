"""An asyncio agent: decorated coroutines, concurrent tool calls, awaitable flush.

    agent-sidecar run &
    python examples/async_agent.py
    curl -s localhost:8765/metrics | grep -E 'agent_(invocations_active|event_duration_seconds_count)'

`async with Emitter()` closes (and flushes) without blocking the event loop; emit() itself
never blocks, so it is safe to call from coroutines.
"""

import asyncio
import os
import random

from sidecar.client import Emitter, current_invocation

RUNS = int(os.environ.get("RUNS", "5"))


async def main() -> None:
    async with Emitter() as emitter:

        @emitter.agent("researcher", model="gpt-4o-mini")
        async def research(topic: str) -> list[str]:
            results = await asyncio.gather(*(search(emitter, topic, q) for q in range(3)))
            current_invocation().record_tokens(input=800 * len(results), output=120)
            current_invocation().record_cost(0.0004)
            return results

        @emitter.agent("writer", model="gpt-4o")
        async def write(notes: list[str]) -> str:
            await asyncio.sleep(random.uniform(0.01, 0.03))
            current_invocation().record_tokens(input=1500, output=700)
            return " ".join(notes)

        for i in range(RUNS):
            async with emitter.workflow("report", session_id=f"s{i}"):
                await write(await research(f"topic {i}"))
        print("flushed:", await emitter.aflush(5), emitter.stats())


async def search(emitter: Emitter, topic: str, q: int) -> str:
    delay = random.uniform(0.005, 0.02)
    await asyncio.sleep(delay)
    emitter.emit("tool.called", agent="researcher", duration_ms=delay * 1000, payload={"tool": "web_search", "q": q})
    return f"{topic}:{q}"


if __name__ == "__main__":
    asyncio.run(main())
