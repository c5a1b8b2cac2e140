"""Workflow runs and agent invocations: the lifecycle events, with ids and durations.

    with emitter.workflow("code_review") as run:          # workflow.started
        with run.agent("planner", model="gpt-4o") as inv:   # agent.invoked
            inv.record_tokens(input=512, output=128)
            inv.record_cost(0.0123)
                                                            # agent.completed (or agent.failed)
                                                            # workflow.completed (or workflow.failed)

Each scope also works as a decorator (`@emitter.agent("coder")`) on sync and async
functions; every call is a fresh invocation. The current run and invocation live in
context variables, so an agent called inside a run (in the same thread or task) joins it.
`trace_id` comes from the active OpenTelemetry span when that package is installed and a
span is active, else from the enclosing run, else it is generated.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Self, TypeVar

from sidecar.contract import field_problem

log = logging.getLogger("sidecar.client")
F = TypeVar("F", bound=Callable[..., Any])

_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar("sidecar_client_run", default=None)
_invocation: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("sidecar_client_invocation", default=None)
_otel: Any = None  # the opentelemetry.trace module, False when it is not installed


def current_run() -> Run | None:
    """The workflow run this code is inside, if any."""
    return _run.get()


def current_invocation() -> Invocation | None:
    """The agent invocation this code is inside, if any (e.g. to record tokens from a decorated function)."""
    return _invocation.get()


def otel_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in W3C hex of the active OpenTelemetry span, or None."""
    global _otel
    if _otel is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _otel = False
        else:
            _otel = trace
    if _otel is False:
        return None
    try:
        ctx = _otel.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    except Exception:  # a broken tracer must not break the app
        log.debug("sidecar.client: could not read the OpenTelemetry span", exc_info=True)
    return None


def new_id() -> str:
    return uuid.uuid4().hex


class _Scope:
    """One started-then-ended piece of work. Subclasses name the events and the fields."""

    STARTED = COMPLETED = FAILED = ""
    _var: contextvars.ContextVar[Any]

    def __init__(self, emitter: Any, name: str, fields: dict[str, Any]):
        self.emitter = emitter
        self.name = name
        self.fields = fields
        self.trace_id: str | None = fields.get("trace_id")
        self.span_id: str | None = fields.get("span_id")
        self.duration_ms: float | None = None
        self._started = 0.0
        self._token: contextvars.Token[Any] | None = None

    def _ids(self) -> dict[str, Any]:
        raise NotImplementedError

    def _trace(self, parent: _Scope | None) -> None:
        if self.trace_id is None:
            ids = otel_ids()
            if ids is not None:
                self.trace_id, self.span_id = ids
            elif parent is not None and parent.trace_id:
                self.trace_id = parent.trace_id
            else:
                self.trace_id = new_id()

    def _event(self) -> dict[str, Any]:
        event = {**self.fields, **self._ids(), "trace_id": self.trace_id}
        if self.span_id:
            event["span_id"] = self.span_id
        return event

    def __enter__(self) -> Self:
        self._token = self._var.set(self)
        self._started = time.perf_counter()
        self.emitter.emit(self.STARTED, **self._event())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        self.duration_ms = (time.perf_counter() - self._started) * 1000.0
        if self._token is not None:
            try:
                self._var.reset(self._token)
            except ValueError:  # exited in another context (e.g. a generator): nothing to restore
                pass
            self._token = None
        event = self._event()
        event["duration_ms"] = self.duration_ms
        event.update(self._outcome())
        if exc_type is None:
            self.emitter.emit(self.COMPLETED, **event)
        else:
            event["error"] = exc_type.__name__
            self.emitter.emit(self.FAILED, **event)
        return False  # the exception, if any, is the app's

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)

    def _outcome(self) -> dict[str, Any]:
        return {}

    def _fresh(self) -> _Scope:
        raise NotImplementedError

    def __call__(self, fn: F) -> F:
        """Use as a decorator: each call of `fn` is one scope of its own."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await fn(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]


class Run(_Scope):
    """One run of a workflow: `workflow.started`, then `workflow.completed` or `workflow.failed`."""

    STARTED, COMPLETED, FAILED = "workflow.started", "workflow.completed", "workflow.failed"
    _var = _run

    def __init__(self, emitter: Any, name: str, fields: dict[str, Any]):
        super().__init__(emitter, name, dict(fields))
        self._fixed_id = self.fields.pop("run_id", None)
        self.run_id: str = self._fixed_id or ""

    def __enter__(self) -> Run:
        self.run_id = self._fixed_id or new_id()
        self._trace(None)
        return super().__enter__()

    def _ids(self) -> dict[str, Any]:
        return {"workflow": self.name, "run_id": self.run_id}

    def _fresh(self) -> Run:
        return Run(self.emitter, self.name, {**self.fields, **({"run_id": self._fixed_id} if self._fixed_id else {})})

    def agent(self, name: str, **fields: Any) -> Invocation:
        """An invocation of agent `name` within this run."""
        return Invocation(self.emitter, name, fields, self)


class Invocation(_Scope):
    """One call of an agent: `agent.invoked`, then `agent.completed` or `agent.failed`, carrying
    the tokens and cost recorded on it."""

    STARTED, COMPLETED, FAILED = "agent.invoked", "agent.completed", "agent.failed"
    _var = _invocation

    def __init__(self, emitter: Any, name: str, fields: dict[str, Any], run: Run | None):
        super().__init__(emitter, name, dict(fields))
        self.run = run
        self._joined: Run | None = run
        self.invocation_id = ""
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cost_usd: float | None = None

    def __enter__(self) -> Invocation:
        self._joined = self.run if self.run is not None else _run.get()
        self.invocation_id = new_id()
        self._trace(self._joined)
        return super().__enter__()

    def _ids(self) -> dict[str, Any]:
        ids = {"agent": self.name, "invocation_id": self.invocation_id}
        run = self._joined
        if run is not None:
            ids["run_id"] = run.run_id
            ids["workflow"] = run.name
        return ids

    def _fresh(self) -> Invocation:
        return Invocation(self.emitter, self.name, self.fields, self.run)

    def record_tokens(self, input: int = 0, output: int = 0) -> None:
        """Add tokens used by this invocation; they go out on its completed/failed event."""
        if _bad("input_tokens", input) or _bad("output_tokens", output):
            return
        if input:
            self.input_tokens = (self.input_tokens or 0) + input
        if output:
            self.output_tokens = (self.output_tokens or 0) + output

    def record_cost(self, usd: float) -> None:
        """Add a cost in US dollars to this invocation."""
        if not _bad("cost_usd", usd):
            self.cost_usd = (self.cost_usd or 0.0) + usd

    def _outcome(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.input_tokens is not None:
            out["input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            out["output_tokens"] = self.output_tokens
        if self.cost_usd is not None:
            out["cost_usd"] = self.cost_usd
        return out


def _bad(name: str, value: Any) -> bool:
    reason = field_problem(name, value)
    if reason is not None:
        log.warning("sidecar.client: ignoring %s: %s", name, reason)
        return True
    return False
