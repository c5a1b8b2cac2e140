"""One number per label combination of an event, looked up once per batch for every sink.

The metrics sink (a slot per type, agent, workflow, severity and model) and the window store (a
key per type, agent, workflow, model, tool, severity and success) each found their own id for
every event with a dict lookup on a tuple of its labels: hashing and comparing five to seven
strings per event, twice. Now the first sink to take a batch numbers its events once
(`LabelSets.of`), and each sink maps those numbers to its own ids with one numpy take, falling
back to its own lookup only for a number it has not met yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sidecar.sinks.columns import SHORT, ints
from sidecar.sinks.series import MAX_LABEL_LENGTH
from sidecar.types import Batch, Event

# Numbered combinations are kept for the process's life (a number never changes meaning, so
# events waiting in a sink keep theirs); past this many, new ones get no number (-1) and each
# sink looks them up itself, as it did before. ~200 bytes each at most: ~20 MB.
MAX_LABEL_SETS = 100_000

LabelSet = tuple[str, str | None, str | None, str | None, str | None, str | None, bool | None]


class Numbered:
    """A batch's label-set numbers; as an array, and the positions of its failed events (each
    made on first use: several sinks read them)."""

    __slots__ = ("owner", "numbers", "failed", "_array")

    def __init__(self, owner: LabelSets, numbers: list[int]) -> None:
        self.owner = owner
        self.numbers = numbers
        self.failed: list[int] | None = None
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """The numbers as int64, read-only: packed once, not once per sink."""
        if self._array is None:
            array = ints(self.numbers)
            array.flags.writeable = False
            self._array = array
        return self._array


def _failed(e: Event) -> bool:
    return e.success is False


def _names_tool(e: Event) -> bool:
    return e.tool is not None


class LabelSets:
    """`number(events)`: per event, the number of its (type, agent, workflow, model, tool,
    severity, success), or -1 for one with a value over MAX_LABEL_LENGTH characters (kept out
    so that no long string is pinned) or met once the table is full.

    A number also says whether its events failed and whether they name a tool, so the sinks find
    those events with one numpy take per batch (`failed`, `tools`) instead of each testing every
    event: three passes over ~1 KB of objects per event (BENCHMARKS.md, 2026-12-02 08:30-09:55)."""

    def __init__(self, limit: int = MAX_LABEL_SETS) -> None:
        self.ids: dict[LabelSet, int] = {}
        self.limit = limit
        # By number, with a last entry no number reaches, read by -1 (not numbered): False.
        self._failed_of = np.zeros(64, dtype=bool)
        self._tool_of = np.zeros(64, dtype=bool)

    def __len__(self) -> int:
        return len(self.ids)

    def of(self, batch: Batch) -> list[int]:
        """The batch's numbers, made by the first sink that asks and kept on the batch."""
        return self._numbered(batch).numbers

    def _numbered(self, batch: Batch) -> Numbered:
        found: Numbered | None = batch.label_sets
        if found is None or found.owner is not self:
            found = batch.label_sets = Numbered(self, self.number(batch.events))
        return found

    def array(self, batches: Sequence[Batch], events: int) -> np.ndarray:
        """The numbers of `batches` (`events` in all) end to end as an array. Batches of a few
        events (a quiet sender's) get one array for all of them, as sinks.columns.fields does."""
        if len(batches) == 1:
            return self._numbered(batches[0]).array()
        numbered = list(map(self._numbered, batches))
        if events >= SHORT * len(batches):
            return np.concatenate([n.array() for n in numbered])
        return ints([number for n in numbered for number in n.numbers])

    def failed(self, batches: Sequence[Batch]) -> list[int]:
        """Positions of the events with success false, in the batches' events end to end (made once per batch)."""
        parts = []
        for batch in batches:
            numbered = self._numbered(batch)
            if numbered.failed is None:
                numbered.failed = self._positions(numbered, self._failed_of, batch.events, _failed)
            parts.append(numbered.failed)
        return _joined(batches, parts)

    def tools(self, batches: Sequence[Batch]) -> list[int]:
        """Positions of the events that name a tool, in the batches' events end to end."""
        return _joined(batches, [self._positions(self._numbered(b), self._tool_of, b.events, _names_tool) for b in batches])

    @staticmethod
    def _positions(numbered: Numbered, by_number: np.ndarray, events: list[Event], fact: Callable[[Event], bool]) -> list[int]:
        if len(events) < SHORT:  # a few events: testing each costs less than the arrays
            return [i for i, e in enumerate(events) if fact(e)]
        array = numbered.array()
        found: list[int] = np.flatnonzero(by_number[array]).tolist()
        if array.min() < 0:  # events not numbered: tested one by one
            found = sorted(found + [i for i in np.flatnonzero(array < 0).tolist() if fact(events[i])])
        return found

    def number(self, events: list[Event]) -> list[int]:
        """A list, not an array: a quiet sender's one-event batches wait in the sinks, and making
        an array per batch would cost more than the lookup it saves. (The decoder numbers the
        events of the Unix and HTTP listeners as it decodes them: `EventDecoder.decode_numbered`.)"""
        get = self.ids.get
        found = [get((e.type, e.agent, e.workflow, e.model, e.tool, e.severity, e.success), -1) for e in events]
        if -1 in found:
            for i, n in enumerate(found):
                if n < 0:
                    e = events[i]
                    found[i] = self.number_of((e.type, e.agent, e.workflow, e.model, e.tool, e.severity, e.success))
        return found

    def numbered(self, numbers: list[int]) -> Numbered:
        """What a Batch carries of numbers made outside `of` (by the decoder)."""
        return Numbered(self, numbers)

    def number_of(self, labels: LabelSet) -> int:
        """The number of one label set, made if it is new (-1: a value too long, or the table full)."""
        n = self.ids.get(labels)
        if n is not None:
            return n
        if len(self.ids) >= self.limit or any(isinstance(v, str) and len(v) > MAX_LABEL_LENGTH for v in labels):
            return -1
        n = self.ids[labels] = len(self.ids)
        if n + 1 >= len(self._failed_of):  # keep the last entry free, for -1
            self._failed_of, self._tool_of = (np.concatenate((a, np.zeros_like(a))) for a in (self._failed_of, self._tool_of))
        self._failed_of[n] = labels[6] is False
        self._tool_of[n] = labels[4] is not None
        return n


def _joined(batches: Sequence[Batch], parts: list[list[int]]) -> list[int]:
    """Positions within each batch as positions in all their events end to end."""
    if len(parts) == 1:
        return parts[0]
    out: list[int] = []
    offset = 0
    for batch, part in zip(batches, parts):
        out += [offset + i for i in part]
        offset += len(batch.events)
    return out


class Mapped:
    """A sink's own ids by label-set number, -1 where it has none yet."""

    def __init__(self) -> None:
        self.table = np.full(64, -1, np.intp)

    def ids(self, numbers: list[int] | np.ndarray) -> np.ndarray:
        """Each number's id. The table always ends in a -1 no number reaches, so that the number
        -1 (not numbered) reads -1 too."""
        array = numbers if isinstance(numbers, np.ndarray) else ints(numbers)
        top = int(array.max()) if len(array) else -1
        if top >= len(self.table) - 1:
            grown = np.full(max(2 * len(self.table), top + 2), -1, np.intp)
            grown[: len(self.table)] = self.table
            self.table = grown
        ids: np.ndarray = self.table[array]
        return ids

    def note(self, number: int, ident: int) -> None:
        if number >= 0:
            self.table[number] = ident

    def clear(self) -> None:
        self.table[:] = -1
