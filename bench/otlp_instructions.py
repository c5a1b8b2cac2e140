"""OTLP mapping cost in instructions per span (valgrind's callgrind), which other processes' load does not move.

    python bench/otlp_instructions.py            # this checkout
    SIDECAR_REPO=/path/to/other/checkout python bench/otlp_instructions.py

The bench's 512-span bodies (bench/otlp_ingest.py), already parsed; instructions are counted only
around the measured loop (callgrind's instrumentation is switched on and off from inside), for 2 and
then 6 requests, and the difference divided by 4 x 512 spans, so start-up and the switching cancel out.
Stages: `read_span` alone; `map_request` with the EventDecoder stubbed out; `map_request`;
`handle_request` (mapping, decoder, span tree, batch). The collector is frozen after set-up, as in
the in-process split of bench/otlp_ingest.py. Needs valgrind (callgrind_control) on the PATH.
"""

from __future__ import annotations

import os
import sys
import time

# SIDECAR_REPO: another checkout to measure (its bench/otlp_ingest.py bodies and its sidecar), e.g. main for "before".
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import callgrind_per_unit, callgrind_switch  # noqa: E402

REPO = os.environ.get("SIDECAR_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("read_span", "map_request without decoder", "map_request", "handle_request")


def child(stage: str, n: int) -> None:
    import gc

    sys.path[:0] = [REPO, os.path.join(REPO, "bench")]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from otlp_ingest import SPANS_PER_REQUEST, bodies
    from prometheus_client import CollectorRegistry

    from sidecar.app import build_app
    from sidecar.config import Config
    from sidecar.ingest.genai import read_resource, read_span

    assert SPANS_PER_REQUEST == 512
    config = Config().replace(**{"ingest.queue_size": 100_000, "listen.unix": ""})
    sidecar = build_app(config, registry=CollectorRegistry()).state.sidecar
    receiver, queue = sidecar.otlp, sidecar.pipeline._queue
    payloads = bodies(n + 2, seed=2)
    requests = []
    for body in payloads:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        requests.append(req)
    for req in requests[:2]:  # warm up: prices looked up, caches filled
        receiver.handle_request(req, {}, time.time())
    while not queue.empty():
        queue.get_nowait()
    if stage == "map_request without decoder":
        receiver.decoder.decode = lambda lines, now, price=True: ([], [], [])  # type: ignore[method-assign]
    otlp, now = config.otlp, time.time()
    gc.collect()
    gc.freeze()
    callgrind_switch(True)
    for req in requests[2:]:
        if stage == "read_span":
            resource = read_resource(req.resource_spans[0].resource.attributes, otlp)
            for span in req.resource_spans[0].scope_spans[0].spans:
                read_span(span, resource, otlp)
        elif stage == "handle_request":
            receiver.handle_request(req, {}, now)
        else:
            receiver.map_request(req, {}, now)
    callgrind_switch(False)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
        return
    print(f"Python {sys.version.split()[0]}, instructions per span (callgrind, 512-span requests: 6 minus 2)")
    for stage in STAGES:
        print(f"{stage}: {callgrind_per_unit(os.path.abspath(__file__), stage, 512):,}")


if __name__ == "__main__":
    main()
