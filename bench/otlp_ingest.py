"""OTLP ingest: GenAI spans per sidecar CPU-second, beside the ceiling probe, and where a span's time goes.

    python bench/otlp_ingest.py [--requests 200] [--connections 2]

Requests are what a BatchSpanProcessor sends: 512 spans each, binary protobuf, agent runs as
Pydantic AI records them (per trace: the agent span, 3 chat spans with usage and message content,
2 tool spans, 2 non-GenAI spans), children before their parents. A client process pre-encodes every
body, then POSTs them over keep-alive connections (retrying 503s); the sidecar's user+system CPU
over the run, divided into the spans, is the figure. Then the same bodies in-process, timed per
stage: protobuf decode, mapping (spans -> event dicts, span tree, prices, JSON), event decoding
(EventDecoder, as every transport), and the sinks (pipeline.process).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ceiling_limit, machine, scrape_value, start_sidecar, timed_load  # noqa: E402

SPANS_PER_REQUEST = 512
SPANS_PER_TRACE = 8
AGENTS = [f"agent-{i:02d}" for i in range(20)]
MODELS = ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash"]
TOOLS = ["search", "fetch", "lookup_order", "refund", "summarise"]
MESSAGES = '[{"role":"user","parts":[{"type":"text","content":"' + "Where is my order? " * 20 + '"}]}]'


def bodies(n_requests: int, seed: int = 1) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    rnd = random.Random(seed)

    def kvs(attrs: dict) -> list[KeyValue]:
        out = []
        for k, v in attrs.items():
            out.append(KeyValue(key=k, value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v)))
        return out

    out = []
    now = int(time.time() * 1e9)
    for _ in range(n_requests):
        spans = []
        for _ in range(SPANS_PER_REQUEST // SPANS_PER_TRACE):
            trace = rnd.getrandbits(128).to_bytes(16, "big")
            ids = [rnd.getrandbits(64).to_bytes(8, "big") for _ in range(SPANS_PER_TRACE)]
            agent, model = rnd.choice(AGENTS), rnd.choice(MODELS)
            conv = f"{rnd.getrandbits(64):016x}"
            common = {"gen_ai.agent.name": agent, "gen_ai.conversation.id": conv, "gen_ai.agent.call.id": conv}

            def span(i: int, parent: int | None, name: str, attrs: dict, error: bool = False) -> Span:
                s = Span(trace_id=trace, span_id=ids[i], parent_span_id=ids[parent] if parent is not None else b"", name=name,
                         start_time_unix_nano=now - rnd.randrange(10**8, 10**10), end_time_unix_nano=now, attributes=kvs(attrs), flags=0x100)
                if error:
                    s.status.code = Status.STATUS_CODE_ERROR
                return s

            for i in (1, 2, 3):
                spans.append(span(i, 0, f"chat {model}", {
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.system": "openai",
                    "gen_ai.request.model": model, "gen_ai.response.model": model, **common,
                    "gen_ai.usage.input_tokens": rnd.randrange(50, 4000), "gen_ai.usage.output_tokens": rnd.randrange(10, 1500),
                    "gen_ai.input.messages": MESSAGES, "gen_ai.output.messages": MESSAGES, "logfire.msg": f"chat {model}",
                }))
            spans.append(span(7, 5, "GET /api", {"http.request.method": "GET", "url.full": "https://api.example.com/x", "http.response.status_code": 200}))
            for i in (4, 5):
                tool = rnd.choice(TOOLS)
                spans.append(span(i, 0, f"execute_tool {tool}", {
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.call.id": f"call-{i}",
                    "gen_ai.tool.call.arguments": '{"q": "x"}', "gen_ai.tool.call.result": "ok", **common,
                }, error=rnd.random() < 0.05))
            spans.append(span(6, 0, "running tools", {"tools": "search"}))
            spans.append(span(0, None, f"invoke_agent {agent}", {
                "gen_ai.operation.name": "invoke_agent", **common, "gen_ai.aggregated_usage.input_tokens": 9000,
                "pydantic_ai.all_messages": MESSAGES, "model_name": model,
            }))
        req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=Resource(attributes=kvs({"service.name": "support-bot"})), scope_spans=[ScopeSpans(spans=spans)])])
        out.append(req.SerializeToString())
    return out


def client(url: str, n_requests: int, connections: int, loaded, ready) -> None:
    payloads = bodies(n_requests)
    host = urllib.parse.urlsplit(url)
    loaded.set()
    ready.wait()

    def worker(part: list[bytes]) -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port)
        for body in part:
            while True:
                conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 503:
                    assert resp.status == 200, resp.status
                    break
                time.sleep(0.01)

    ts = [threading.Thread(target=worker, args=(payloads[i::connections],)) for i in range(connections)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def over_http(n_requests: int, connections: int) -> dict:
    spans = n_requests * SPANS_PER_REQUEST
    events = spans * 6 // SPANS_PER_TRACE  # agent, 3 chats, 2 tools per trace
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp)
        try:
            elapsed, cpu = timed_load(proc.pid, proc.url, "sidecar_events_processed_total", events, client, proc.url, n_requests, connections)
            received = scrape_value(proc.url, "sidecar_otlp_spans_received_total")
            assert received == spans, (received, spans)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return {"spans": spans, "events": events, "seconds": elapsed, "cpu": cpu}


def stages(n_requests: int) -> dict[str, float]:
    """CPU seconds per span in each stage, in-process (one thread, no HTTP; process time, not wall time:
    on a shared machine wall time counts the other processes' turns too)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from prometheus_client import CollectorRegistry

    from sidecar.app import build_app
    from sidecar.config import Config
    from sidecar.ingest.otlp import OtlpReceiver
    from sidecar.pricing import Pricer

    config = Config().replace(**{"ingest.queue_size": 100_000, "listen.unix": ""})
    registry = CollectorRegistry()
    sidecar = build_app(config, registry=registry).state.sidecar
    receiver = OtlpReceiver(config, sidecar.decoder, sidecar.pipeline, sidecar.metrics, CollectorRegistry(), time.time,
                            Pricer(config.pricing, CollectorRegistry()))
    decode_time = 0.0
    real_decode = sidecar.decoder.decode

    def timed_decode(*args, **kwargs):
        nonlocal decode_time
        t = time.process_time()
        try:
            return real_decode(*args, **kwargs)
        finally:
            decode_time += time.process_time() - t

    receiver.decoder.decode = timed_decode  # type: ignore[method-assign]
    payloads = bodies(n_requests + 2, seed=2)
    gc.collect()
    gc.freeze()  # the harness's own objects must not make the collector's passes longer than in a sidecar
    queue = sidecar.pipeline._queue
    for body in payloads[:2]:  # warm up: the first sight of each model looks its price up (~50 ms)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        receiver.handle_request(req, {}, time.time())
        while not queue.empty():
            sidecar.pipeline.process(queue.get_nowait())
    decode_time = 0.0
    t_parse = t_handle = t_sinks = 0.0
    for body in payloads[2:]:
        t = time.process_time()
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        t_parse += time.process_time() - t
        t = time.process_time()
        receiver.handle_request(req, {}, time.time())
        t_handle += time.process_time() - t
        t = time.process_time()
        while not queue.empty():
            sidecar.pipeline.process(queue.get_nowait())
        t_sinks += time.process_time() - t
    n = n_requests * SPANS_PER_REQUEST
    return {
        "protobuf decode": t_parse / n,
        "mapping (dicts, span tree, prices, JSON)": (t_handle - decode_time) / n,
        "event decode + validation (EventDecoder)": decode_time / n,
        "sinks (metrics, windows, tail)": t_sinks / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--connections", type=int, default=2)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    limit = ceiling_limit()
    print(f"ceiling.py limit: {limit:,.0f} events/s")
    r = over_http(args.requests, args.connections)
    per_cpu = r["spans"] / r["cpu"]
    print(f"spans: {r['spans']:,} ({r['events']:,} events), wall {r['seconds']:.2f} s, sidecar CPU {r['cpu']:.2f} s")
    print(f"spans per sidecar CPU-second: {per_cpu:,.0f} = {per_cpu / limit:.3f}x ceiling (target >= 0.05x); "
          f"spans/s wall: {r['spans'] / r['seconds']:,.0f}; CPU per span {r['cpu'] / r['spans'] * 1e6:.1f} µs")
    split = stages(min(args.requests, 50))
    total = sum(split.values())
    print("| stage | µs per span | share |")
    print("|---|---|---|")
    for name, seconds in split.items():
        print(f"| {name} | {seconds * 1e6:.1f} | {seconds / total:.0%} |")
    print(f"| in-process total | {total * 1e6:.1f} | |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
