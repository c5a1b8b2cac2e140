"""Real OpenTelemetry clients against a real `agent-sidecar run` process: the OTel SDK's own OTLP/HTTP
exporter (protobuf, gzip, deflate), the same spans as OTLP/JSON, a real Pydantic AI agent, and the
example configured by OTEL_EXPORTER_OTLP_ENDPOINT alone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from otlp_spans import otlp_json
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from sidecar.testing import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def value(url: str, name: str, **labels: str) -> float:
    return scrape(url).get((name, tuple(sorted(labels.items()))), 0.0)


def processed(url: str) -> float:
    return value(url, "sidecar_events_processed_total")


def agent_run(service: str):
    """Spans of one workflow run as a GenAI-instrumented app makes them, recorded in memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("invoke_workflow triage", attributes={"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "triage"}):
        with tracer.start_as_current_span("invoke_agent planner", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
            "gen_ai.usage.input_tokens": 3600, "gen_ai.usage.output_tokens": 900,  # aggregated: must not count twice
        }):
            for i in range(3):
                with tracer.start_as_current_span("chat gpt-4o", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
                    "gen_ai.input.messages": "[{\"role\": \"user\", \"content\": \"private\"}]",
                }):
                    pass
            with tracer.start_as_current_span("execute_tool search", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}):
                with tracer.start_as_current_span("GET /search"):  # not GenAI: ignored
                    pass
            with tracer.start_as_current_span("execute_tool fetch", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch"}) as failing:
                failing.record_exception(TimeoutError("slow"))
                failing.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    return memory.get_finished_spans()


@pytest.mark.untraced
@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
def test_the_sdk_exporter_delivers_genai_spans_as_exact_events_and_the_json_form_gives_the_same(spawn, compression):
    proc = spawn()
    spans = agent_run("triage-svc")
    assert len(spans) == 8
    exporter = OTLPSpanExporter(endpoint=proc.url + "/v1/traces", compression=compression)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    wait_until(lambda: processed(proc.url) == 7, "7 events from 8 spans")
    url = proc.url
    labels = {"agent": "planner", "workflow": "triage"}
    assert value(url, "agent_events_total", type="llm.call", severity="info", **labels) == 3
    assert value(url, "agent_events_total", type="tool.call", severity="info", **labels) == 1
    assert value(url, "agent_events_total", type="tool.call", severity="error", **labels) == 1
    assert value(url, "agent_events_total", type="agent.completed", severity="info", **labels) == 1
    assert value(url, "agent_workflow_runs_total", workflow="triage", outcome="completed") == 1
    assert value(url, "agent_errors_total", error="TimeoutError", **labels) == 1
    assert value(url, "agent_tokens_total", agent="planner", model="gpt-4o", token_type="input") == 3600  # not 7200
    assert value(url, "agent_tokens_total", agent="planner", model="gpt-4o", token_type="output") == 900
    assert value(url, "agent_cost_usd_total", agent="planner", model="gpt-4o") == pytest.approx(3 * (1200 * 2.5 + 300 * 10) / 1e6)
    assert value(url, "sidecar_otlp_spans_received_total") == 8
    assert value(url, "sidecar_otlp_spans_total", outcome="ignored", reason="no_operation") == 1
    assert value(url, "sidecar_events_accepted_total", transport="otlp") == 7

    # The same spans once more, as OTLP/JSON built by json_format from the exporter's own encoding.
    r = httpx.post(url + "/v1/traces", content=otlp_json(encode_spans(spans)), headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {}
    wait_until(lambda: processed(url) == 14, "the JSON copy")
    assert value(url, "agent_tokens_total", agent="planner", model="gpt-4o", token_type="input") == 7200
    assert value(url, "agent_events_total", type="tool.call", severity="error", **labels) == 2
    assert proc.stop() == 0


def pydantic_agent(tracer_provider):
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.test import TestModel

    agent = Agent(TestModel(call_tools=["lookup_order"]), name="support")
    agent.instrument = InstrumentationSettings(tracer_provider=tracer_provider)

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        return f"order {order_id}: shipped"

    @agent.tool_plain
    def refund(order_id: str) -> str:
        raise ConnectionError("payment service unavailable")

    return agent, TestModel


@pytest.mark.untraced
def test_a_pydantic_ai_agent_shows_its_runs_llm_calls_tools_tokens_and_failure(spawn):
    proc = spawn()
    tail: list[dict] = []

    def read_tail(ws) -> None:
        try:
            while True:
                tail.extend(json.loads(ws.recv(timeout=30))["events"])
        except Exception:
            return

    with connect(proc.url.replace("http://", "ws://") + "/v1/tail") as ws:
        wait_until(lambda: value(proc.url, "sidecar_tail_clients") == 1, "tail client")
        reader = threading.Thread(target=read_tail, args=(ws,), daemon=True)
        reader.start()
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=proc.url + "/v1/traces")))
        agent, TestModel = pydantic_agent(provider)
        # agent.run (not run_sync, which leaves an unclosed event loop behind for a later test to trip on)
        asyncio.run(agent.run("Where is my order?"))
        with pytest.raises(ConnectionError):
            asyncio.run(agent.run("Refund it", model=TestModel(call_tools="all")))
        provider.shutdown()
        spans = memory.get_finished_spans()
        chats = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
        tools = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
        input_tokens = sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats)
        output_tokens = sum(s.attributes["gen_ai.usage.output_tokens"] for s in chats)
        n = len(chats) + len(tools) + 2
        wait_until(lambda: processed(proc.url) == n and len(tail) == n, f"{n} events in metrics and tail")

    url = proc.url
    assert value(url, "agent_events_total", type="agent.completed", agent="support", workflow="", severity="info") == 1
    assert value(url, "agent_events_total", type="agent.failed", agent="support", workflow="", severity="error") == 1
    assert value(url, "agent_events_total", type="llm.call", agent="support", workflow="", severity="info") == len(chats)
    assert value(url, "agent_events_total", type="tool.call", agent="support", workflow="", severity="error") == 1
    assert value(url, "agent_events_total", type="tool.call", agent="support", workflow="", severity="info") == len(tools) - 1
    assert value(url, "agent_tokens_total", agent="support", model="test", token_type="input") == input_tokens > 0
    assert value(url, "agent_tokens_total", agent="support", model="test", token_type="output") == output_tokens > 0
    assert value(url, "agent_errors_total", agent="support", workflow="", error="ConnectionError") == 2  # the tool and its run

    stats = httpx.get(url + "/v1/stats", params={"window": "1h", "agent": "support"}).json()
    assert stats["events"] == n and stats["errors"] == 2
    assert stats["tokens"]["input"] == input_tokens and stats["tokens"]["output"] == output_tokens
    assert stats["events_by_type"] == {"agent.completed": 1, "agent.failed": 1, "llm.call": len(chats), "tool.call": len(tools)}

    by_type: dict[str, list[dict]] = {}
    for ev in tail:
        by_type.setdefault(ev["type"], []).append(ev)
    assert sorted(ev["tool"] for ev in by_type["tool.call"]) == sorted(s.attributes["gen_ai.tool.name"] for s in tools)
    [failed] = by_type["agent.failed"]
    assert failed["error"] == "ConnectionError" and failed["agent"] == "support"
    assert all(ev["invocation_id"] in {e["span_id"] for e in by_type["agent.completed"] + by_type["agent.failed"]} for ev in tail)
    assert "shipped" not in json.dumps(tail) and "Where is my order" not in json.dumps(tail)  # no message content
    assert proc.stop() == 0


@pytest.mark.untraced
def test_the_example_configured_by_otel_exporter_otlp_endpoint_alone_exports_without_an_error(spawn):
    proc = spawn()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "otel_pydantic_ai.py")], capture_output=True, text=True, timeout=120,
        env={**env, "PYTHONPATH": REPO, "OTEL_EXPORTER_OTLP_ENDPOINT": proc.url, "OTEL_SERVICE_NAME": "support-bot"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # the exporters log every failed export (and every partial success) there
    assert "'runs': 2" in out.stdout
    for signal in ("traces", "metrics", "logs"):
        outcome = "accepted" if signal == "traces" else "ignored"
        assert value(proc.url, "sidecar_otlp_requests_total", signal=signal, outcome=outcome) >= 1, signal
    wait_until(lambda: value(proc.url, "agent_events_total", type="agent.failed", agent="support", workflow="", severity="error") == 1, "failed run")
    assert value(proc.url, "agent_events_total", type="agent.completed", agent="support", workflow="", severity="info") == 1
    assert proc.stop() == 0


def test_spans_still_held_at_shutdown_go_out_with_what_is_known(spawn):
    from otlp_spans import request, span

    from sidecar.testing import final_totals

    proc = spawn(config="otlp:\n  hold: 1h\n")
    # An LLM call whose agent span (id 7) never arrives: held, waiting for its ancestor.
    body = request(span("chat", 2, parent=7, attrs={"gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 5})).SerializeToString()
    r = httpx.post(proc.url + "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200
    wait_until(lambda: value(proc.url, "sidecar_otlp_spans_held") == 1, "the span to be held")
    assert processed(proc.url) == 0
    assert proc.stop() == 0
    totals = final_totals(proc.output)
    assert totals["accepted"] == 1 and totals["processed"] == 1, proc.output
