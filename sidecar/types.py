"""The event contract and the small types every part of the sidecar shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Protocol

import msgspec

from sidecar.contract import AMOUNT, BOOL, COUNT, FIELDS, MAXIMUM, SEVERITIES, SEVERITY, STR, TIMESTAMP

__all__ = ["SEVERITIES", "Batch", "Event", "Rejection", "Severity", "Sink", "SinkDrops"]
Severity = Literal["debug", "info", "warning", "error", "critical"]

# msgspec refuses 1e999 for any float; a negative timestamp is the decoder's to refuse (a datetime
# before 1970 can be one too). Constraints here would cost every event's decode.
_Timestamp = float | Annotated[datetime, msgspec.Meta(tz=True)]


def _annotation(name: str, kind: str) -> Any:
    """The msgspec type that enforces `contract.FIELDS[name]` (and its `MAXIMUM`)."""
    if kind == AMOUNT:
        return Annotated[float, msgspec.Meta(ge=0, le=MAXIMUM[name])]
    if kind == COUNT:
        return Annotated[int, msgspec.Meta(ge=0, le=int(MAXIMUM[name]))]
    return {STR: str, BOOL: bool, SEVERITY: Severity, TIMESTAMP: _Timestamp}[kind]


if TYPE_CHECKING:
    # What mypy sees. The decoder uses the Struct built below from contract.FIELDS, the one
    # source of the schema; tests/test_contract.py checks this view names the same fields.

    class Event(msgspec.Struct, gc=False):
        type: str
        timestamp: float | datetime | None = None
        severity: Severity | None = None
        agent: str | None = None
        workflow: str | None = None
        model: str | None = None
        tool: str | None = None
        run_id: str | None = None
        invocation_id: str | None = None
        trace_id: str | None = None
        span_id: str | None = None
        session_id: str | None = None
        duration_ms: float | None = None
        input_tokens: int | None = None
        output_tokens: int | None = None
        tokens: int | None = None
        cost_usd: float | None = None
        success: bool | None = None
        error: str | None = None

else:
    Event = msgspec.defstruct(
        "Event",
        [("type", str), *((name, _annotation(name, kind) | None, None) for name, kind in FIELDS.items())],
        module=__name__,
        gc=False,
    )
    Event.__doc__ = """One agent event, as decoded and normalised by `protocol.EventDecoder`.

    Built from `contract.FIELDS` (names, kinds) and `contract.MAXIMUM` (limits). After
    decoding, `timestamp` is always epoch seconds (float), `severity` and `success` are
    always set. Fields not listed (including `payload`) stay in the raw line the batch
    carries, for the live tail.
    """


class Rejection(NamedTuple):
    """A line or item that was not accepted: its position in the input and why."""

    index: int  # type: ignore[assignment]  # a public field name that shadows tuple.index
    reason: str
    message: str


@dataclass(slots=True)
class Batch:
    """Events decoded from one read or one request, with the bytes each was sent as."""

    events: list[Event]
    raws: Sequence[bytes]  # a list, or the LineBlock a Unix read came in (split when asked)
    received_at: float
    transport: str
    # The events' label-set numbers (sidecar.sinks.labelsets.Numbered): made by the decoder as it
    # decoded them (EventDecoder.decode_numbered), or else by the first sink that asks.
    label_sets: Any = None
    # The events' numeric fields as columns, made by the first sink that asks
    # (sidecar.sinks.columns.field): name -> read-only float64 array.
    columns: dict[str, Any] = field(default_factory=dict)


# Events of a batch a sink had to leave out: position in `Batch.events` -> reason (a label of
# sidecar_sink_events_dropped_total). The pipeline does not count them as processed.
SinkDrops = dict[int, str]


class Sink(Protocol):
    """Something the pipeline feeds. Only the pipeline task calls `consume`.

    The app's lifespan calls `start` before the first batch and `close` after the
    pipeline has drained, so a sink can own tasks or files for exactly that span.
    """

    name: str

    async def start(self) -> None: ...

    def consume(self, batch: Batch) -> SinkDrops | None:
        """Take a batch. A sink that cannot take one event isolates it (the rest of the batch
        still counts) and returns it here; None when it took them all."""

    def maintain(self, now: float) -> None:
        """Periodic housekeeping (expiry, abandon sweeps); called about once a second."""

    async def close(self) -> None: ...
