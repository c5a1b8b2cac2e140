"""A smoke run of a real sidecar process, for the dependency-floors test.

Run with the oldest releases pyproject.toml allows installed (tests/test_dependency_floors.py does
that in a throwaway venv). It touches every third-party feature the sidecar relies on: uvicorn's
websockets-sansio protocol with keepalive pings, Starlette's WebSocket denial responses, the
websockets asyncio client, prometheus_client's OpenMetrics exposition with exemplars, msgspec's typed
decoding, numpy's window store, isal's gzip of /metrics, and an OTLP/HTTP span (opentelemetry-proto) priced by genai-prices. Prints "smoke ok" and exits 0, or fails with what broke.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

EVENT = {"type": "llm.call", "agent": "planner", "model": "m", "duration_ms": 12.5, "input_tokens": 10,
         "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}


def start(tmp: str) -> tuple[subprocess.Popen[bytes], str, str]:
    config = os.path.join(tmp, "config.yaml")
    with open(config, "w") as f:
        f.write("tail:\n  ping_interval: 0.5s\n")
    sock = os.path.join(tmp, "ingest.sock")
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "run", "--config", config, "--http", "127.0.0.1:0",
                             "--unix", sock], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        if " ready " in line:
            url = next(w[5:] for w in line.split() if w.startswith("http="))
            return proc, url, sock
    proc.kill()
    raise SystemExit("sidecar did not start: " + proc.stdout.read().decode())


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_ping(host: str, port: int) -> None:
    """A bare WebSocket handshake, then the first frame must be the server's ping (opcode 0x9)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall((f"GET /v1/tail HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        while not rest:
            rest = s.recv(4096)
        assert rest[0] == 0x89, f"expected a ping frame, got {rest[:8]!r}"


def otlp_export(url: str) -> None:
    """One GenAI chat span over OTLP/HTTP protobuf (opentelemetry-proto's classes), priced by genai-prices."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    now = time.time_ns()
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.agent.name": "otel-agent",
             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    span = Span(trace_id=bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"), span_id=bytes.fromhex("00f067aa0ba902b7"),
                name="chat gpt-4o", start_time_unix_nano=now - 5_000_000, end_time_unix_nano=now,
                attributes=[KeyValue(key=k, value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v))
                            for k, v in attrs.items()])
    body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]).SerializeToString()
    status, answer = http("POST", url + "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
    assert status == 200, (status, answer)
    ExportTraceServiceResponse.FromString(answer)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = http("GET", url + "/metrics")[1].decode()
        cost = [line for line in text.splitlines() if line.startswith('agent_cost_usd_total{agent="otel-agent"')]
        if cost:
            assert float(cost[0].split()[-1]) > 0, cost
            return
        time.sleep(0.1)
    raise AssertionError("the OTLP span's priced LLM call never reached /metrics")


async def refused_origin(url: str) -> int:
    """A foreign Origin is refused during the handshake with a JSON 403 (Starlette's denial response)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(url.replace("http://", "ws://") + "/v1/tail", origin="http://evil.example"):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def tail_one(url: str, sock: str) -> dict[str, object]:
    from websockets.asyncio.client import connect

    async with connect(url.replace("http://", "ws://") + "/v1/tail?agent=planner") as ws:
        await asyncio.sleep(0.2)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(json.dumps(EVENT).encode() + b"\n")
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        while not message.get("events"):
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return message


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, sock = start(tmp)
        try:
            host, port = url[len("http://"):].rsplit(":", 1)
            message = asyncio.run(tail_one(url, sock))
            assert message["events"][0]["agent"] == "planner", message
            status, body = http("POST", url + "/v1/events", json.dumps([EVENT, {"type": "Bad"}]).encode(),
                                {"Content-Type": "application/json"})
            assert status == 202 and json.loads(body)["accepted"] == 1, (status, body)
            status, body = http("GET", url + "/metrics", headers={"Accept": "application/openmetrics-text"})
            text = body.decode()
            assert status == 200 and 'agent_events_total{' in text and "trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"" in text, text[-3000:]
            status, body = http("GET", url + "/metrics", headers={"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"})
            assert status == 200 and 'agent_events_total{' in gzip.decompress(body).decode(), body[:200]  # isal's gzip
            status, body = http("GET", url + "/v1/stats")
            assert status == 200 and json.loads(body)["windows"], body[:500]
            assert asyncio.run(refused_origin(url)) == 403
            otlp_export(url)
            wait_for_ping(host, int(port))
        finally:
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=20)[0].decode()
        assert proc.returncode == 0, out
    print("smoke ok")


if __name__ == "__main__":
    main()
