"""One number per label combination of an event, looked up once per batch for every sink.

The metrics sink (a slot per type, agent, workflow, severity and model) and the window store (a
key per type, agent, workflow, model, tool, severity and success) each found their own id for
every event with a dict lookup on a tuple of its labels: hashing and comparing five to seven
strings per event, twice. Now the first sink to take a batch numbers its events once
(`LabelSets.of`), and each sink maps those numbers to its own ids with one numpy take, falling
back to its own lookup only for a number it has not met yet.
"""

from __future__ import annotations

import numpy as np

from sidecar.sinks.columns import ints
from sidecar.sinks.series import MAX_LABEL_LENGTH
from sidecar.types import Batch, Event

# Numbered combinations are kept for the process's life (a number never changes meaning, so
# events waiting in a sink keep theirs); past this many, new ones get no number (-1) and each
# sink looks them up itself, as it did before. ~200 bytes each at most: ~20 MB.
MAX_LABEL_SETS = 100_000

LabelSet = tuple[str, str | None, str | None, str | None, str | None, str | None, bool | None]


class LabelSets:
    """`number(events)`: per event, the number of its (type, agent, workflow, model, tool,
    severity, success), or -1 for one with a value over MAX_LABEL_LENGTH characters (kept out
    so that no long string is pinned) or met once the table is full."""

    def __init__(self, limit: int = MAX_LABEL_SETS) -> None:
        self.ids: dict[LabelSet, int] = {}
        self.limit = limit

    def __len__(self) -> int:
        return len(self.ids)

    def of(self, batch: Batch) -> list[int]:
        """The batch's numbers, made by the first sink that asks and kept on the batch."""
        found = batch.label_sets
        if found is None or found[0] is not self:
            found = batch.label_sets = (self, self.number(batch.events))
        numbers: list[int] = found[1]
        return numbers

    def number(self, events: list[Event]) -> list[int]:
        """A list, not an array: a quiet sender's one-event batches wait in the sinks, and making
        an array per batch would cost more than the lookup it saves."""
        get = self.ids.get
        found = [get((e.type, e.agent, e.workflow, e.model, e.tool, e.severity, e.success), -1) for e in events]
        if -1 in found:
            for i, n in enumerate(found):
                if n < 0:
                    found[i] = self._add(events[i])
        return found

    def _add(self, e: Event) -> int:
        labels = (e.type, e.agent, e.workflow, e.model, e.tool, e.severity, e.success)
        n = self.ids.get(labels)  # added earlier in this batch
        if n is not None:
            return n
        if len(self.ids) >= self.limit or any(isinstance(v, str) and len(v) > MAX_LABEL_LENGTH for v in labels):
            return -1
        n = self.ids[labels] = len(self.ids)
        return n


class Mapped:
    """A sink's own ids by label-set number, -1 where it has none yet."""

    def __init__(self) -> None:
        self.table = np.full(64, -1, np.intp)

    def ids(self, numbers: list[int]) -> np.ndarray:
        """Each number's id. The table always ends in a -1 no number reaches, so that the number
        -1 (not numbered) reads -1 too."""
        top = max(numbers, default=-1)
        if top >= len(self.table) - 1:
            grown = np.full(max(2 * len(self.table), top + 2), -1, np.intp)
            grown[: len(self.table)] = self.table
            self.table = grown
        ids: np.ndarray = self.table[ints(numbers)]
        return ids

    def note(self, number: int, ident: int) -> None:
        if number >= 0:
            self.table[number] = ident

    def clear(self) -> None:
        self.table[:] = -1
