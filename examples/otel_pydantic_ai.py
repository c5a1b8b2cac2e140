"""A Pydantic AI agent reporting to agent-sidecar through OpenTelemetry alone: no sidecar code in the app.

    agent-sidecar run &                                          # in another terminal
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8765 OTEL_SERVICE_NAME=support-bot \\
        python examples/otel_pydantic_ai.py
    curl -s localhost:8765/metrics | grep agent_

The exporters read everything from the standard OTEL_* environment variables; traces, metrics and
logs all go to the sidecar's base URL (/v1/traces, /v1/metrics, /v1/logs). The sidecar turns the
GenAI spans into agent events; it accepts and ignores the metrics and logs. TestModel stands in
for a real model (no network, no key): put your own model in its place.

Needs: pip install pydantic-ai-slim opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
"""

import logging

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import set_meter_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

# The usual OpenTelemetry setup; the endpoint, service name and headers come from OTEL_* variables.
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(tracer_provider)
meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
set_meter_provider(meter_provider)
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
set_logger_provider(logger_provider)
log = logging.getLogger("support-bot")
log.addHandler(LoggingHandler(logger_provider=logger_provider))
log.setLevel(logging.INFO)

Agent.instrument_all()  # GenAI spans (and metrics) for every agent, through the global providers

agent = Agent(TestModel(call_tools=["lookup_order"]), name="support", instructions="Help with orders.")


@agent.tool_plain
def lookup_order(order_id: str) -> str:
    """Find an order."""
    return f"order {order_id}: shipped"


@agent.tool_plain
def refund(order_id: str) -> str:
    """Refund an order (the payment service is down)."""
    raise ConnectionError("payment service unavailable")


result = agent.run_sync("Where is my order?")
log.info("first run answered: %s", result.output)
try:  # this run calls every tool; refund raises and the run fails: agent.failed in the sidecar
    agent.run_sync("Refund my order", model=TestModel(call_tools="all"))
except ConnectionError as exc:
    log.warning("second run failed: %s", exc)

for provider in (tracer_provider, meter_provider, logger_provider):
    provider.shutdown()  # flushes: every span, metric and log record is sent before exit
print({"runs": 2, "usage": {"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens}})
