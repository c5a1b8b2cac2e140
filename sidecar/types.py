"""The event contract and the small types every part of the sidecar shares."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, NamedTuple, Protocol

import msgspec

from sidecar.contract import MAX_COUNT, SEVERITIES

__all__ = ["SEVERITIES", "Batch", "Event", "Rejection", "Severity", "Sink", "SinkDrops"]
Severity = Literal["debug", "info", "warning", "error", "critical"]

# `le=max float` turns 1e999 (which JSON decoders read as inf) into a validation error.
_Amount = Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)]
# Counts are summed into float cells: beyond 2**53 they lose precision, and a 400-digit
# integer (valid JSON) would raise OverflowError inside the metrics sink.
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
_Timestamp = float | Annotated[datetime, msgspec.Meta(tz=True)]


class Event(msgspec.Struct, gc=False):
    """One agent event, as decoded and normalised by `protocol.EventDecoder`.

    Its fields and their kinds are `contract.FIELDS` (a test keeps the two in step).

    After decoding, `timestamp` is always epoch seconds (float), `severity` and
    `success` are always set. Fields not listed here (including `payload`) stay in
    the raw line the batch carries, for the live tail.
    """

    type: str
    timestamp: _Timestamp | None = None
    severity: Severity | None = None
    agent: str | None = None
    workflow: str | None = None
    model: str | None = None
    run_id: str | None = None
    invocation_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    session_id: str | None = None
    duration_ms: _Amount | None = None
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    tokens: _Count | None = None
    cost_usd: _Amount | None = None
    success: bool | None = None
    error: str | None = None


class Rejection(NamedTuple):
    """A line or item that was not accepted: its position in the input and why."""

    index: int
    reason: str
    message: str


@dataclass(slots=True)
class Batch:
    """Events decoded from one read or one request, with the bytes each was sent as."""

    events: list[Event]
    raws: list[bytes]
    received_at: float
    transport: str


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
