"""Agent, workflow and invocation for spans whose ancestors arrive later. No I/O, clock passed in.

A child span (the LLM call) ends, and is exported, before its parent (the agent run). So a span
whose chain of parents does not yet reach its trace's root is *held*, waiting on the missing
ancestor, until that arrives (`add`), until `otlp.hold` passes, or until `otlp.max_held` spans wait,
whichever is first; then it goes out with what is known, the rest from its fallbacks (`expire`).

Memory is bounded twice: `max_tracked` recent spans remembered (oldest forgotten first) and
`max_held` spans waiting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from itertools import islice
from typing import Generic, TypeVar

import msgspec

from sidecar.ingest.genai import Node

MAX_DEPTH = 256  # ancestors walked at most: a hostile parent cycle must end somewhere

T = TypeVar("T")


# Structs with gc=False: they refer to nothing that refers back, and a held span lives up to otlp.hold.
class Context(msgspec.Struct, gc=False):
    """What a span's ancestry gives it (None where nothing on the known chain said)."""

    agent: str | None
    workflow: str | None
    invocation_id: str | None


class Held(msgspec.Struct, Generic[T], gc=False):
    key: bytes
    item: T
    own: Node
    deadline: float
    waiting_on: bytes = b""
    context: Context = msgspec.field(default_factory=lambda: Context(None, None, None))


class SpanTree(Generic[T]):
    """Remembers recent spans and holds the items (event drafts) of those whose ancestry is unknown."""

    def __init__(self, max_tracked: int, max_held: int, hold: float):
        self.max_tracked = max_tracked
        self.max_held = max_held
        self.hold = hold
        # OrderedDicts, not dicts: a dict that keeps deleting its oldest key makes `next(iter(d))` skip
        # every deleted slot before it, ~90 us per insert at 100,000 entries; popitem(last=False) is O(1).
        self.nodes: OrderedDict[bytes, Node] = OrderedDict()
        self.held: OrderedDict[bytes, Held[T]] = OrderedDict()  # insertion order is deadline order (restore re-sorts)
        self._waiting: dict[bytes, list[bytes]] = {}  # missing ancestor -> keys of held spans waiting on it

    def remember(self, key: bytes, node: Node) -> None:
        nodes = self.nodes
        if key not in nodes and len(nodes) >= self.max_tracked:
            nodes.popitem(last=False)
        nodes[key] = node

    def remember_all(self, pairs: list[tuple[bytes, Node]]) -> None:
        """`remember` for one request's spans."""
        nodes = self.nodes
        nodes.update(pairs)
        excess = len(nodes) - self.max_tracked
        for _ in range(excess):  # oldest first; a request larger than max_tracked keeps its last spans
            nodes.popitem(last=False)

    def walk(self, key: bytes, own: Node) -> tuple[Context, bytes | None]:
        """The context the known chain gives, and the first missing ancestor's key (None: chain complete)."""
        agent = own.agent
        workflow = own.workflow
        invocation = key[16:].hex() if own.is_agent else None
        parent = own.parent
        nodes = self.nodes
        for _ in range(MAX_DEPTH):
            if parent is None or (agent is not None and workflow is not None and invocation is not None):
                break
            node = nodes.get(parent)
            if node is None:
                return Context(agent, workflow, invocation), parent
            if node.is_agent:
                if invocation is None:
                    invocation = parent[16:].hex()
                if agent is None:
                    agent = node.agent
            if workflow is None:
                workflow = node.workflow
            parent = node.parent
        return Context(agent, workflow, invocation), None

    def place(self, key: bytes, own: Node, item: T, now: float) -> Held[T] | None:
        """Resolve the item's context now (returned, ready) or hold it (None). Call after `remember`
        of every span that arrived with it, so ancestors in the same request count."""
        if key in self.held:
            self._drop(key)  # the same span sent again replaces the one waiting: never two events for it
        context, missing = self.walk(key, own)
        held = Held(key, item, own, now + self.hold, context=context)
        if missing is None:
            return held
        held.waiting_on = missing
        self.held[key] = held
        self._waiting.setdefault(missing, []).append(key)
        return None

    def wake(self, arrived: Iterable[bytes]) -> list[Held[T]]:
        """Held items whose missing ancestor is among `arrived` and whose chain is now complete."""
        ready: list[Held[T]] = []
        if not self._waiting:
            return ready
        for key in arrived:
            waiting = self._waiting.pop(key, None)
            if not waiting:
                continue
            for held_key in waiting:
                held = self.held.get(held_key)
                if held is None:
                    continue
                held.context, missing = self.walk(held_key, held.own)
                if missing is None:
                    del self.held[held_key]
                    ready.append(held)
                else:  # a further ancestor is missing: wait on that one now
                    held.waiting_on = missing
                    self._waiting.setdefault(missing, []).append(held_key)
        return ready

    def expire(self, now: float) -> tuple[list[Held[T]], list[Held[T]]]:
        """Items whose hold has passed, and the oldest beyond `max_held`: each with the context known."""
        timed_out: list[Held[T]] = []
        for key, held in self.held.items():
            if held.deadline > now:
                break
            timed_out.append(held)
        overflow: list[Held[T]] = []
        excess = len(self.held) - len(timed_out) - self.max_held
        if excess > 0:
            overflow = list(islice(self.held.values(), len(timed_out), len(timed_out) + excess))
        for held in timed_out + overflow:
            self._release(held)
            held.context, _ = self.walk(held.key, held.own)
        return timed_out, overflow

    def next_deadline(self) -> float | None:
        for held in self.held.values():
            return held.deadline
        return None

    def restore(self, items: list[Held[T]]) -> None:
        """Hold again items taken out (their batch could not be queued), in deadline order."""
        if not items:
            return
        merged = sorted([*self.held.values(), *(h for h in items if h.key not in self.held)], key=lambda h: h.deadline)
        self.held = OrderedDict((h.key, h) for h in merged)
        for held in items:
            held.context, missing = self.walk(held.key, held.own)
            held.waiting_on = missing or held.waiting_on
            self._waiting.setdefault(held.waiting_on, []).append(held.key)

    def discard(self, keys: list[bytes]) -> None:
        """Forget held items (their request was refused: the exporter sends them again)."""
        for key in keys:
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        held = self.held.pop(key, None)
        if held is not None:
            self._unwait(held)

    def _release(self, held: Held[T]) -> None:
        del self.held[held.key]
        self._unwait(held)

    def _unwait(self, held: Held[T]) -> None:
        waiting = self._waiting.get(held.waiting_on)
        if waiting is not None:
            try:
                waiting.remove(held.key)
            except ValueError:
                pass
            if not waiting:
                del self._waiting[held.waiting_on]
