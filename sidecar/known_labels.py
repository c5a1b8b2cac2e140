"""Decoders that hand out the label values the decoder kept, instead of fresh strings.

msgspec makes a new str for every string it decodes, so each event's type, agent, workflow and
model came out as fresh copies, which the decoder then swapped for the ones it kept
(`EventDecoder._keep`): each copy hashed, compared, stored back into the event and freed, five
fields per event. A field typed as a `Literal` of strings comes out of msgspec as the very object
the Literal holds, found by a hash of the raw bytes: nothing made, nothing freed, and the value
is the kept one already (BENCHMARKS.md, 2026-12-02 23:00: 11% less time per event in the
pipeline).

So the decoder notes every label value it keeps here, and `decoders(now)` gives it an Event type
whose label fields are Literals of the values noted so far (a subclass of `Event`, equal to an
`Event` with the same fields). A value not noted yet fails that decode with a ValidationError;
the decoder then parses the read with the plain `Event`, as before, notes the new value, and the
next build includes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from sidecar.types import Event

# The label fields the decoder keeps (EventDecoder._keep): a label set's strings.
FIELDS = ("type", "agent", "workflow", "model", "tool")
# Values per field. A build costs ~5 us a value (typing's Literal and msgspec's lookup table), and
# a fleet sends a few dozen types, agents, workflows, models and tools; past this a field is not
# a label (a run id sent as `workflow`), the literals stop and the plain decode does it all.
MAX_VALUES = 2000
# New values are built in at most this often (seconds), so a sender making up new agents keeps
# the event loop out of rebuilds; the reads with a value not built in yet are parsed plainly.
REBUILD_EVERY = 1.0
# After a read the literal decoders refused (a value not noted: too long, a new type, or a bad
# event), the plain decoders for this long (seconds): not two parses per read from such a sender.
PAUSE_AFTER_MISS = 1.0


class Literals:
    """The literal decoders of one build: `decode` (one line) and `decode_lines` (a block)."""

    __slots__ = ("decode", "decode_lines")

    def __init__(self, values: dict[str, tuple[str, ...]]):
        fields: list[Any] = [("type", _literal(*values["type"]))]
        fields += [(name, _literal(*values[name], None), None) for name in FIELDS[1:]]  # None in the Literal: no Union, cached too
        event: Any = msgspec.defstruct(
            "Event", fields, bases=(Event,), module=Event.__module__, gc=False, namespace={"__eq__": _equal, "__ne__": _unequal}
        )
        decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(event)
        self.decode: Callable[[bytes], Event] = decoder.decode
        self.decode_lines: Callable[[bytes], list[Event]] = decoder.decode_lines


def _literal(*values: str | None) -> Any:
    """`Literal[values]`, holding these very objects. typing caches its Literals by their values
    (128 of them): a cached one would hand out another build's objects, equal but not the kept
    ones, and pin old builds' values. So the uncached function under the cache, where there is one."""
    uncached = getattr(getattr(Literal, "_getitem", None), "__wrapped__", None)
    return Literal[values] if uncached is None else uncached(Literal, *values)


def _equal(self: Event, other: object) -> Any:
    """As `Event`'s ==, whichever of the two types each side is."""
    if not isinstance(other, Event):
        return NotImplemented
    return msgspec.structs.astuple(self) == msgspec.structs.astuple(other)


def _unequal(self: Event, other: object) -> Any:
    equal = _equal(self, other)
    return equal if equal is NotImplemented else not equal


class KnownLabels:
    """The label values kept so far, per field, and the literal decoders built from them.

    `now` is the clock the decoder is given (a batch's received time). Several threads may decode
    at once (OTLP bodies in a worker): a build reads a snapshot of the values, and a value noted
    meanwhile leaves the decoders stale, to be built in next time."""

    def __init__(self, max_values: int = MAX_VALUES, rebuild_every: float = REBUILD_EVERY, pause_after_miss: float = PAUSE_AFTER_MISS):
        self.max_values = max_values
        self.rebuild_every = rebuild_every
        self.pause_after_miss = pause_after_miss
        self._values: dict[str, dict[str, None]] = {name: {} for name in FIELDS}  # insertion-ordered sets
        self.literals: Literals | None = None
        self.full = False  # a field passed max_values: no more literals
        self.builds = 0
        self._stale = False
        self._build_at = 0.0
        self._missed = False
        self._pause_until = 0.0

    def note(self, labels: tuple[str | None, ...]) -> None:
        """Values of FIELDS, in that order (None: the event had none), as the decoder keeps them."""
        for name, value in zip(FIELDS, labels):
            if value is not None:
                known = self._values[name]
                if value not in known:
                    if len(known) >= self.max_values:
                        self.full, self.literals = True, None
                        return
                    known[value] = None
                    self._stale = True

    def decoders(self, now: float) -> Literals | None:
        """The literal decoders to try first now, built anew when values were noted since and
        REBUILD_EVERY has passed; None: parse plainly (see `missed`)."""
        if self._missed:
            self._missed = False
            self._pause_until = now + self.pause_after_miss
        if self._stale and now >= self._build_at and not self.full:
            self._stale = False  # before the snapshot: a value noted during the build stales it again
            self.literals = Literals({name: tuple(known) for name, known in self._values.items()})
            self.builds += 1
            self._build_at = now + self.rebuild_every
            self._pause_until = 0.0  # a miss on a value not built in yet: built in now
        return None if now < self._pause_until else self.literals

    def missed(self) -> None:
        """The literal decoders refused a read: plain ones for PAUSE_AFTER_MISS from the next
        `decoders` call on (unless a build comes first)."""
        self._missed = True
