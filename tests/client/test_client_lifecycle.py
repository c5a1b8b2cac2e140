"""Workflow runs and agent invocations: the events, ids and durations, and the sidecar's gauges."""

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from sidecar.client import Emitter, current_invocation, current_run
from sidecar.client import lifecycle


def _labels(**kw):
    return kw


def test_a_workflow_with_agents_moves_the_gauges_and_records_tokens_cost_and_durations(sidecar):
    emitter = Emitter(unix=sidecar.unix)
    with emitter.workflow("code_review", session_id="s1") as run:
        with run.agent("planner", model="gpt-4o") as inv:
            inv.record_tokens(input=512, output=128)
            inv.record_tokens(input=8)
            inv.record_cost(0.01)
            inv.record_cost(0.02)
            assert emitter.flush(10)
            sidecar.wait_processed(2)
            assert sidecar.value("agent_workflows_active", {"workflow": "code_review"}) == 1
            assert sidecar.value("agent_invocations_active", {"agent": "planner"}) == 1
        with run.agent("coder"):
            pass
    assert emitter.flush(10)
    sidecar.wait_processed(6)
    assert sidecar.value("agent_workflows_active", {"workflow": "code_review"}) == 0
    assert sidecar.value("agent_invocations_active", {"agent": "planner"}) == 0
    assert sidecar.value("agent_workflow_runs_total", {"workflow": "code_review", "outcome": "completed"}) == 1
    assert sidecar.value("agent_tokens_total", {"agent": "planner", "model": "gpt-4o", "token_type": "input"}) == 520
    assert sidecar.value("agent_tokens_total", {"agent": "planner", "model": "gpt-4o", "token_type": "output"}) == 128
    assert sidecar.value("agent_cost_usd_total", {"agent": "planner", "model": "gpt-4o"}) == pytest.approx(0.03)
    for t, agent in (("workflow.completed", ""), ("agent.completed", "planner"), ("agent.completed", "coder")):
        labels = {"type": t, "agent": agent, "workflow": "code_review"}
        assert sidecar.value("agent_event_duration_seconds_count", labels) == 1
    assert inv.duration_ms <= run.duration_ms
    wf_sum = sidecar.value("agent_event_duration_seconds_sum", {"type": "workflow.completed", "agent": "", "workflow": "code_review"})
    assert wf_sum == pytest.approx(run.duration_ms / 1000)
    emitter.close()


def test_an_exception_fails_the_invocation_and_the_run_with_its_type_and_propagates(sidecar):
    emitter = Emitter(unix=sidecar.unix)
    with pytest.raises(KeyError):
        with emitter.workflow("etl") as run:
            with run.agent("loader"):
                raise KeyError("x")
    assert emitter.flush(10)
    sidecar.wait_processed(4)
    assert sidecar.value("agent_errors_total", {"agent": "loader", "workflow": "etl", "error": "KeyError"}) == 1
    assert sidecar.value("agent_errors_total", {"agent": "", "workflow": "etl", "error": "KeyError"}) == 1
    assert sidecar.value("agent_workflow_runs_total", {"workflow": "etl", "outcome": "failed"}) == 1
    assert sidecar.value("agent_workflows_active", {"workflow": "etl"}) == 0
    assert sidecar.value("agent_invocations_active", {"agent": "loader"}) == 0
    assert sidecar.value("agent_event_duration_seconds_count", {"type": "agent.failed", "agent": "loader", "workflow": "etl"}) == 1
    emitter.close()


def test_the_events_carry_ids_that_tie_invocations_to_their_run(capture):
    emitter = Emitter(unix=capture.path)
    with emitter.workflow("review", run_id="run-7") as run:
        with run.agent("planner", model="m") as inv:
            assert current_run() is run and current_invocation() is inv
    assert current_run() is None and current_invocation() is None
    emitter.close(10)
    started, invoked, completed, finished = capture.events()
    assert [e["type"] for e in (started, invoked, completed, finished)] == [
        "workflow.started", "agent.invoked", "agent.completed", "workflow.completed"
    ]
    assert {e["run_id"] for e in (started, invoked, completed, finished)} == {"run-7"}
    assert invoked["invocation_id"] == completed["invocation_id"] == inv.invocation_id and len(inv.invocation_id) == 32
    assert invoked["workflow"] == "review" and invoked["model"] == "m" and invoked["agent"] == "planner"
    assert {e["trace_id"] for e in (started, invoked, completed, finished)} == {run.trace_id}
    assert "duration_ms" not in started and completed["duration_ms"] == inv.duration_ms
    assert "input_tokens" not in completed and "error" not in finished


def test_decorated_functions_sync_and_async_are_invocations_that_join_the_current_run(capture):
    emitter = Emitter(unix=capture.path)

    @emitter.agent("coder", model="m")
    def code(x):
        current_invocation().record_tokens(output=x)
        return x * 2

    @emitter.agent("reviewer")
    async def review(x):
        await asyncio.sleep(0)
        if x < 0:
            raise ValueError("negative")
        return x + 1

    @emitter.workflow("pipeline")
    def pipeline():
        return code(3), asyncio.run(review(1))

    assert pipeline() == (6, 2)
    assert code(1) == 2  # outside any run
    with pytest.raises(ValueError):
        asyncio.run(review(-1))
    emitter.close(10)
    events = capture.events()
    by_type = [(e["type"], e.get("agent"), e.get("workflow")) for e in events]
    assert by_type == [
        ("workflow.started", None, "pipeline"),
        ("agent.invoked", "coder", "pipeline"),
        ("agent.completed", "coder", "pipeline"),
        ("agent.invoked", "reviewer", "pipeline"),
        ("agent.completed", "reviewer", "pipeline"),
        ("workflow.completed", None, "pipeline"),
        ("agent.invoked", "coder", None),
        ("agent.completed", "coder", None),
        ("agent.invoked", "reviewer", None),
        ("agent.failed", "reviewer", None),
    ]
    assert events[2]["output_tokens"] == 3 and events[-1]["error"] == "ValueError"
    assert len({e["invocation_id"] for e in events if e["type"] == "agent.invoked"}) == 4  # one per call
    assert events[6]["trace_id"] != events[0]["trace_id"]


def test_invalid_tokens_or_cost_are_ignored_with_a_warning_not_raised(capture, caplog):
    emitter = Emitter(unix=capture.path)
    with emitter.agent("a") as inv:
        inv.record_tokens(input=-1)
        inv.record_tokens(output=2.5)
        inv.record_cost(float("nan"))
        inv.record_tokens(input=4)
    emitter.close(10)
    assert capture.events()[-1]["input_tokens"] == 4 and "cost_usd" not in capture.events()[-1]
    assert caplog.text.count("ignoring") == 3


def test_trace_id_comes_from_the_active_opentelemetry_span(capture):
    context = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=False, trace_flags=TraceFlags(1))
    emitter = Emitter(unix=capture.path)
    with trace.use_span(NonRecordingSpan(context)):
        with emitter.workflow("traced") as run:
            pass
    with emitter.workflow("untraced") as other:
        pass
    emitter.close(10)
    assert run.trace_id == "0af7651916cd43dd8448eb211c80319c" and run.span_id == "b7ad6b7169203331"
    started = capture.events()[0]
    assert started["trace_id"] == run.trace_id and started["span_id"] == run.span_id
    assert len(other.trace_id) == 32 and other.trace_id != run.trace_id and other.span_id is None


def test_without_opentelemetry_ids_are_generated(monkeypatch):
    monkeypatch.setattr(lifecycle, "_otel", False)
    assert lifecycle.otel_ids() is None
