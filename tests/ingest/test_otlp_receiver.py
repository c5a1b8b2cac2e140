"""POST /v1/traces, /v1/metrics, /v1/logs on a real sidecar (uvicorn in a thread): answers, counts, bad input."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import zlib

import httpx
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest, ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics
from otlp_spans import TRACE, nested, otlp_json, request, span
from websockets.sync.client import connect

from sidecar.ingest.otlp import INLINE_BODY_BYTES
from sidecar.testing import running_sidecar, wait_until

PB, JS = "application/x-protobuf", "application/json"


def post(s, body: bytes, content_type: str = PB, path: str = "/v1/traces", **headers: str) -> httpx.Response:
    return httpx.post(s.url + path, content=body, headers={"Content-Type": content_type, **headers}, timeout=30)


def parse(r: httpx.Response, message):
    """The response body as `message`, in the encoding the answer says it is in."""
    if r.headers["content-type"].startswith(PB):
        message.ParseFromString(r.content)
    else:
        json_format.Parse(r.content, message)
    return message


def answer(r: httpx.Response) -> ExportTraceServiceResponse:
    assert r.status_code == 200, r.content
    return parse(r, ExportTraceServiceResponse())


def status(r: httpx.Response) -> Status:
    return parse(r, Status())


def spans_by_outcome(s) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in s.registry.collect():
        if metric.name == "sidecar_otlp_spans":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["outcome"]] = out.get(sample.labels["outcome"], 0) + sample.value
    return out


def conserved(s) -> bool:
    """received = mapped + ignored + rejected + dropped + held, exactly."""
    held = s.value("sidecar_otlp_spans_held") or 0
    return s.value("sidecar_otlp_spans_received_total") == sum(spans_by_outcome(s).values()) + held


AGENT_RUN = [  # as an exporter sends them: children end (and come) first
    span("chat", 3, 2, attrs={"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500}),
    span("execute_tool", 4, 2, attrs={"gen_ai.tool.name": "search"}, error=True, exception="TimeoutError"),
    span(None, 5, 2, name="http GET"),
    span("invoke_agent", 2, 1, attrs={"gen_ai.agent.name": "planner", "gen_ai.usage.input_tokens": 1000}),
    span("invoke_workflow", 1, attrs={"gen_ai.workflow.name": "review"}),
]


def test_protobuf_spans_become_events_with_agent_workflow_and_an_empty_export_response():
    with running_sidecar() as s:
        r = post(s, request(*AGENT_RUN).SerializeToString())
        assert r.headers["content-type"] == PB and not answer(r).HasField("partial_success")
        s.wait_processed(4)
        tokens = {"agent": "planner", "model": "gpt-4o"}
        assert s.value("agent_tokens_total", {**tokens, "token_type": "input"}) == 1000  # not 2000: the agent span's usage is not counted
        assert s.value("agent_tokens_total", {**tokens, "token_type": "output"}) == 500
        assert s.value("agent_cost_usd_total", tokens) == pytest.approx(1000 * 2.5e-6 + 500 * 10e-6)  # genai-prices: gpt-4o
        assert s.value("agent_events_total", {"type": "tool.call", "agent": "planner", "workflow": "review", "severity": "error"}) == 1
        assert s.value("agent_errors_total", {"agent": "planner", "workflow": "review", "error": "TimeoutError"}) == 1
        assert s.value("agent_events_total", {"type": "agent.completed", "agent": "planner", "workflow": "review", "severity": "info"}) == 1
        assert s.value("agent_workflow_runs_total", {"workflow": "review", "outcome": "completed"}) == 1
        assert s.value("sidecar_events_accepted_total", {"transport": "otlp"}) == 4
        assert spans_by_outcome(s) == {"mapped": 4, "ignored": 1} and conserved(s)


def test_json_body_gets_a_json_answer_with_partial_success_naming_each_refused_span():
    body = json.loads(otlp_json(request(span("chat", 1, attrs={"gen_ai.agent.name": "a"}), span("chat", 2), span("chat", 3))))
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[1]["spanId"] = "zz" * 8  # not hex
    spans[2]["traceId"] = "ab" * 5  # hex, but 5 bytes
    with running_sidecar() as s:
        r = post(s, json.dumps(body).encode(), JS)
        assert r.headers["content-type"] == JS
        doc = r.json()["partialSuccess"]
        assert doc["rejectedSpans"] == "2"  # int64 as a string, as OTLP/JSON has it
        assert "bad_span_id: spanId must be hex" in doc["errorMessage"] and "spans[1]" in doc["errorMessage"]
        assert "bad_trace_id: trace_id must be 16 bytes (32 hex digits), got 5" in doc["errorMessage"]
        s.wait_processed(1)
        assert s.value("agent_events_total", {"type": "llm.call", "agent": "a", "workflow": "", "severity": "info"}) == 1
        assert s.value("sidecar_otlp_spans_total", {"outcome": "rejected", "reason": "bad_span_id"}) == 1
        assert s.value("sidecar_otlp_requests_total", {"signal": "traces", "outcome": "partial"}) == 1 and conserved(s)


def _counts(s) -> dict[str, float]:
    names = ("agent_events", "agent_tokens", "agent_cost_usd", "agent_errors", "agent_workflow_runs", "agent_event_duration_seconds")
    return {
        f"{x.name}{sorted(x.labels.items())}": x.value
        for m in s.registry.collect() if m.name in names for x in m.samples if not x.name.endswith("_created")
    }


def test_json_and_protobuf_of_the_same_spans_give_the_same_events():
    # Two sidecars, one per encoding: sending the same spans twice to one would end the same run
    # (run_id = trace id) twice, which agent_workflow_runs_total rightly counts once.
    req = request(*AGENT_RUN)
    counts = []
    for body, content_type in ((req.SerializeToString(), PB), (otlp_json(req), JS)):
        with running_sidecar() as s:
            assert post(s, body, content_type).status_code == 200
            s.wait_processed(4)
            counts.append(_counts(s))
    assert counts[0] == counts[1] and counts[0]


def test_every_span_refused_is_a_400_with_a_status_body():
    bad = span("chat", 1)
    bad.span_id = b"\x00" * 3
    with running_sidecar() as s:
        r = post(s, request(bad).SerializeToString())
        assert r.status_code == 400 and r.headers["content-type"] == PB
        assert "every span was refused: bad_span_id: span_id must be 8 bytes (16 hex digits), got 3" in status(r).message
        assert s.value("sidecar_otlp_requests_total", {"signal": "traces", "outcome": "refused"}) == 1 and conserved(s)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (to build a body deeper than the library will build)."""
    def varint(n: int) -> bytes:
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def too_deep_protobuf(depth: int = 200) -> bytes:
    value = _ld(1, b"bottom")  # AnyValue.string_value
    for _ in range(depth):  # AnyValue.kvlist_value -> KeyValueList.values -> KeyValue{key, value}
        value = _ld(6, _ld(1, _ld(1, b"k") + _ld(2, value)))
    deep_span = span("chat", 9).SerializeToString() + _ld(9, _ld(1, b"deep") + _ld(2, value))  # Span.attributes
    return request(span("chat", 1)).SerializeToString() + _ld(1, _ld(2, _ld(2, deep_span)))


def too_deep_json(depth: int = 200) -> bytes:
    value: dict = {"stringValue": "bottom"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    doc = json.loads(otlp_json(request(span("chat", 1))))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append({"key": "deep", "value": value})
    return json.dumps(doc).encode()


def metrics_request() -> ExportMetricsServiceRequest:
    point = NumberDataPoint(as_int=7, time_unix_nano=1)
    metric = Metric(name="gen_ai.client.token.usage", description="tokens", gauge=Gauge(data_points=[point]))
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[metric])])])


BAD_BODIES = {
    "truncated protobuf": (lambda: request(*AGENT_RUN).SerializeToString()[:-7], PB, "undecodable"),
    "metrics request as protobuf": (lambda: metrics_request().SerializeToString(), PB, None),
    "metrics request as JSON": (lambda: json_format.MessageToJson(metrics_request()).encode(), JS, "wrong_message_type"),
    "not JSON": (lambda: b'{"resourceSpans": [', JS, "undecodable"),
    "JSON array": (lambda: b"[1, 2]", JS, "undecodable"),
    "JSON of wrong shape": (lambda: b'{"resourceSpans": 5}', JS, "undecodable"),
    "protobuf nested 200 deep": (too_deep_protobuf, PB, "undecodable"),
    "JSON nested 200 deep": (too_deep_json, JS, "undecodable"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_bodies_get_a_clear_4xx_are_counted_and_the_next_request_still_works(case):
    make, content_type, outcome = BAD_BODIES[case]
    with running_sidecar() as s:
        r = post(s, make(), content_type)
        assert 400 <= r.status_code < 500, r.content
        assert status(r).message  # says what was wrong
        if outcome is not None:
            assert status(r).message.startswith(outcome)
            assert s.value("sidecar_otlp_requests_total", {"signal": "traces", "outcome": outcome}) == 1
        else:  # a metrics body is valid protobuf for traces too: its "spans" have no valid ids
            assert "bad_trace_id" in status(r).message or "undecodable" in status(r).message
        assert conserved(s)
        assert answer(post(s, request(span("chat", 1)).SerializeToString()))  # alive, and the good span goes in
        s.wait_processed(1)


@pytest.mark.parametrize("content_type", [PB, JS])
def test_a_bad_span_never_costs_the_good_span_beside_it(content_type):
    huge = span("chat", 2, attrs={f"a{i}": i for i in range(5_000)})
    wrong_id = span("chat", 3)
    wrong_id.trace_id = b"\x01" * 7
    deep = span("chat", 4, attrs={"deep": nested(30)})
    good = span("chat", 1, attrs={"gen_ai.agent.name": "good"})
    req = request(huge, wrong_id, deep, good)
    body = req.SerializeToString() if content_type == PB else otlp_json(req)
    with running_sidecar() as s:
        r = post(s, body, content_type)
        partial = answer(r).partial_success
        assert partial.rejected_spans == 2
        assert "too_many_attributes: 5001 attributes, more than otlp.max_attributes (1024)" in partial.error_message
        assert "bad_trace_id" in partial.error_message
        s.wait_processed(2)  # the good one and the deeply nested one (its payload marks where it was cut)
        assert s.value("agent_events_total", {"type": "llm.call", "agent": "good", "workflow": "", "severity": "info"}) == 1
        assert s.value("sidecar_otlp_spans_total", {"outcome": "rejected", "reason": "too_many_attributes"}) == 1
        assert conserved(s)


def test_gzip_and_deflate_bodies_are_decoded_and_a_bomb_is_413():
    body = request(span("chat", 1)).SerializeToString()
    with running_sidecar(**{"ingest.max_body_bytes": 1024 * 1024}) as s:
        assert answer(post(s, gzip.compress(body), **{"Content-Encoding": "gzip"}))
        assert answer(post(s, zlib.compress(body), **{"Content-Encoding": "deflate"}))
        assert answer(post(s, zlib.compress(otlp_json(request(span("chat", 2)))), JS, **{"Content-Encoding": "deflate"}))
        s.wait_processed(3)
        bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024))  # 50 KiB on the wire, 50 MiB inflated
        r = post(s, bomb, **{"Content-Encoding": "gzip"})
        assert r.status_code == 413 and "after decompression" in status(r).message
        r = post(s, zlib.compress(b"\x00" * (50 * 1024 * 1024)), **{"Content-Encoding": "deflate"})
        assert r.status_code == 413
        r = post(s, b"not deflate at all", **{"Content-Encoding": "deflate"})
        assert r.status_code == 400 and "deflate" in status(r).message
        assert post(s, body, **{"Content-Encoding": "br"}).status_code == 415
        assert s.value("sidecar_otlp_requests_total", {"signal": "traces", "outcome": "too_large"}) == 2
        assert s.value("sidecar_otlp_requests_total", {"signal": "traces", "outcome": "bad_encoding"}) == 2


def test_another_content_type_is_415_and_a_missing_token_401():
    body = request(span("chat", 1)).SerializeToString()
    with running_sidecar(**{"auth.token": "s3cret"}) as s:
        r = post(s, body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "bearer token" in status(r).message
        r = post(s, body, Authorization="Bearer s3cret", **{"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/x-protobuf" in r.json()["message"]
        assert answer(post(s, body, Authorization="Bearer s3cret"))
        assert post(s, b"", path="/v1/metrics").status_code == 401
        assert s.value("sidecar_otlp_requests_total", {"signal": "traces", "outcome": "unauthorized"}) == 1
        assert s.value("sidecar_otlp_requests_total", {"signal": "traces", "outcome": "unsupported_content_type"}) == 1


@pytest.mark.parametrize("content_type", [PB, JS])
def test_metrics_and_logs_are_accepted_counted_and_ignored(content_type):
    with running_sidecar() as s:
        for path, req, resp_type in (
            ("/v1/metrics", metrics_request(), ExportMetricsServiceResponse),
            ("/v1/logs", ExportLogsServiceRequest(), ExportLogsServiceResponse),
        ):
            body = req.SerializeToString() if content_type == PB else json_format.MessageToJson(req).encode()
            r = post(s, body, content_type, path)
            assert r.status_code == 200 and r.headers["content-type"] == content_type
            parse(r, resp_type())
        assert s.value("sidecar_otlp_requests_total", {"signal": "metrics", "outcome": "ignored"}) == 1
        assert s.value("sidecar_otlp_requests_total", {"signal": "logs", "outcome": "ignored"}) == 1
        assert not s.value("sidecar_events_received_total", {"transport": "otlp"})  # the spans already say it all


def test_full_queue_answers_503_with_retry_after_and_the_retry_is_counted_once():
    with running_sidecar(**{"ingest.queue_size": 1}) as s:

        async def stall():  # stop the pipeline task so the queue fills, as under overload
            for task in asyncio.all_tasks():
                if task.get_name() == "pipeline":
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stall(), s.loop).result(5)
        waiting = request(span("chat", 7, 6, attrs={"gen_ai.agent.name": "x"}))  # its parent (6) comes later
        assert answer(post(s, waiting.SerializeToString()))
        assert s.value("sidecar_otlp_spans_held") == 1
        assert answer(post(s, request(span("chat", 1)).SerializeToString()))  # fills the queue
        r = post(s, request(span("invoke_agent", 6), span("chat", 2)).SerializeToString())  # would release 7 too
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "queue_full" in status(r).message
        assert s.value("sidecar_otlp_spans_held") == 1  # span 7 waits again: its request was answered 200
        assert s.value("sidecar_otlp_spans_total", {"outcome": "dropped", "reason": "queue_full"}) == 2
        assert s.value("sidecar_events_dropped_total", {"reason": "queue_full"}) == 2
        assert conserved(s)


def test_a_span_whose_parent_never_comes_goes_out_after_otlp_hold_with_the_resource_agent():
    with running_sidecar(**{"otlp.hold": 0.2}) as s:
        orphan = request(span("chat", 7, 6), resource={"service.name": "billing-bot"})
        assert answer(post(s, orphan.SerializeToString()))
        s.wait_processed(1)  # no further request needed: the hold's timer sends it
        assert s.value("agent_events_total", {"type": "llm.call", "agent": "billing-bot", "workflow": "", "severity": "info"}) == 1
        assert s.value("sidecar_otlp_held_released_total", {"reason": "timeout"}) == 1
        assert s.value("sidecar_otlp_spans_held") == 0 and conserved(s)


def test_more_held_spans_than_max_held_go_out_oldest_first():
    with running_sidecar(**{"otlp.max_held": 2}) as s:
        orphans = [span("chat", 10 + i, 99, attrs={"gen_ai.agent.name": f"a{i}"}) for i in range(5)]
        assert answer(post(s, request(*orphans).SerializeToString()))
        s.wait_processed(3)
        assert s.value("sidecar_otlp_held_released_total", {"reason": "overflow"}) == 3
        assert s.value("sidecar_otlp_spans_held") == 2
        assert [s.value("agent_events_total", {"type": "llm.call", "agent": f"a{i}", "workflow": "", "severity": "info"}) for i in range(5)] == [
            1, 1, 1, None, None
        ]


def test_prices_fill_cost_and_an_unpriced_model_is_counted():
    config = 'pricing:\n  models:\n    house-model: {input_per_mtok: 1.0, output_per_mtok: 2.0}\n'
    import yaml

    from sidecar.config import config_from_dict

    with running_sidecar(config_from_dict(yaml.safe_load(config))) as s:
        req = request(
            span("chat", 1, attrs={"gen_ai.agent.name": "a", "gen_ai.request.model": "house-model", "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 1_000_000}),
            span("chat", 2, attrs={"gen_ai.agent.name": "a", "gen_ai.request.model": "no-such-model-anywhere", "gen_ai.usage.input_tokens": 5}),
            span("chat", 3, attrs={"gen_ai.agent.name": "a", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5, "operation.cost": 0.5}),
        )
        assert answer(post(s, req.SerializeToString()))
        s.wait_processed(3)
        assert s.value("agent_cost_usd_total", {"agent": "a", "model": "house-model"}) == 3.0
        assert s.value("agent_cost_usd_total", {"agent": "a", "model": "no-such-model-anywhere"}) is None
        assert s.value("agent_cost_usd_total", {"agent": "a", "model": "gpt-4o"}) == 0.5  # a sent cost wins
        assert [s.value("sidecar_pricing_events_total", {"outcome": o}) for o in ("override", "unpriced", "sent")] == [1, 1, 1]


def test_the_tail_streams_each_event_with_its_tool_and_payload_but_no_message_content():
    with running_sidecar() as s, connect(s.url.replace("http://", "ws://") + "/v1/tail") as ws:
        wait_until(lambda: s.value("sidecar_tail_clients") == 1, "tail client connected")
        tool = span("execute_tool", 4, attrs={
            "gen_ai.tool.name": "search", "gen_ai.agent.name": "coder", "gen_ai.tool.call.arguments": '{"q": "secret"}',
            "gen_ai.tool.call.id": "call-1",
        })
        assert answer(post(s, request(tool).SerializeToString()))
        [ev] = json.loads(ws.recv(timeout=10))["events"]
        assert (ev["type"], ev["tool"], ev["agent"], ev["trace_id"]) == ("tool.call", "search", "coder", TRACE.hex())
        assert ev["payload"]["gen_ai.tool.call.id"] == "call-1" and "secret" not in json.dumps(ev)


def test_ancestry_is_added_to_the_event_json_once_also_when_a_full_queue_makes_it_wait_again():
    import time

    from prometheus_client import CollectorRegistry

    from sidecar.app import build_app
    from sidecar.config import Config

    sidecar = build_app(Config().replace(**{"ingest.queue_size": 1, "listen.unix": ""}), registry=CollectorRegistry()).state.sidecar
    receiver, queue, now = sidecar.otlp, sidecar.pipeline._queue, time.time()
    parents = request(span("invoke_agent", 2, 1, attrs={"gen_ai.agent.name": "planner"}), span("invoke_workflow", 1, attrs={"gen_ai.workflow.name": "review"}))
    assert receiver.handle(request(span("chat", 3, 2)).SerializeToString(), PB, now)[0] == "accepted"  # waits for its agent
    assert receiver.handle(request(span("chat", 9)).SerializeToString(), PB, now)[0] == "accepted"  # fills the queue
    assert receiver.handle(parents.SerializeToString(), PB, now)[0] == "queue_full"  # woke the chat, could not queue it
    assert len(receiver.tree.held) == 1
    queue.get_nowait()
    assert receiver.handle(parents.SerializeToString(), PB, now)[0] == "accepted"
    batch = queue.get_nowait()

    def no_duplicate_keys(pairs):
        assert len({k for k, _ in pairs}) == len(pairs), pairs
        return dict(pairs)

    [(event, raw)] = [(e, r) for e, r in zip(batch.events, batch.raws) if e.type == "llm.call"]
    sent = json.loads(raw, object_pairs_hook=no_duplicate_keys)
    invocation = (2).to_bytes(8, "big").hex()
    assert (sent["agent"], sent["workflow"], sent["invocation_id"]) == ("planner", "review", invocation)
    assert (event.agent, event.workflow, event.invocation_id) == ("planner", "review", invocation)
    assert sent["span_id"] == (3).to_bytes(8, "big").hex() and sent["payload"]["span.name"] == "chat"


def test_a_large_body_is_mapped_beside_the_event_loop_not_on_it():
    """Past INLINE_BODY_BYTES the spans are decoded and mapped in a worker thread: the loop keeps
    turning meanwhile (a heartbeat on it never waits for the whole request)."""
    content = "x" * 400
    spans = [span("chat", i + 1, attrs={"gen_ai.request.model": "m", "gen_ai.agent.name": "a", "filler": content}) for i in range(12_000)]
    body = request(*spans).SerializeToString()
    assert len(body) > 4 * INLINE_BODY_BYTES
    with running_sidecar(**{"ingest.max_body_bytes": 16 * 2**20}) as s:
        gaps: list[float] = []
        stop = threading.Event()

        async def heartbeat():
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beating = asyncio.run_coroutine_threadsafe(heartbeat(), s.loop)
        started = time.perf_counter()
        assert answer(post(s, body))
        took = time.perf_counter() - started
        stop.set()
        beating.result(5)
        s.wait_processed(12_000)
    assert took > 0.2  # long enough for the loop to have been held, had the mapping run on it
    assert max(gaps) < took / 2, (max(gaps), took)

