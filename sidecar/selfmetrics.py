"""sidecar_* metrics about the sidecar itself, on an injected registry (never the global one)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from sidecar import __version__
from sidecar.types import Rejection


class SelfMetrics:
    """Counters every part of the sidecar reports into. Conservation holds exactly:
    received = accepted + rejected + dropped, per transport."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.received = Counter(
            "sidecar_events_received", "Events (lines or body items) read from a transport.", ["transport"], registry=registry
        )
        self.accepted = Counter(
            "sidecar_events_accepted", "Events that passed validation and were queued for the pipeline.", ["transport"], registry=registry
        )
        self.rejected = Counter(
            "sidecar_events_rejected", "Events refused as invalid, by the reason given to the sender.", ["transport", "reason"], registry=registry
        )
        self.dropped = Counter(
            "sidecar_events_dropped", "Valid events dropped before processing (for example queue_full).", ["reason"], registry=registry
        )
        self.processed = Counter(
            "sidecar_events_processed", "Accepted events that every sink has consumed (accepted minus processed is the backlog).", registry=registry
        )
        self.sink_errors = Counter(
            "sidecar_sink_errors", "Batches a sink failed to process (a bug: see the log).", ["sink"], registry=registry
        )
        self.sink_dropped = Counter(
            "sidecar_sink_events_dropped",
            "Accepted events a sink left out while the rest of their batch went on (not counted as processed); "
            "each counted once, against the first sink that dropped it.",
            ["sink", "reason"],
            registry=registry,
        )
        self.connections = Gauge("sidecar_unix_connections", "Open Unix socket ingest connections.", registry=registry)
        self.connections_refused = Counter(
            "sidecar_unix_connections_refused",
            "New Unix clients that found every slot (ingest.max_connections) held by clients that deliver, and waited in the listen backlog.",
            registry=registry,
        )
        self.idle_closed = Counter(
            "sidecar_unix_connections_idle_closed",
            "Unix socket clients closed for delivering no complete event: for ingest.idle_timeout, or for ingest.evict_after when a new client needed the slot.",
            registry=registry,
        )
        self.socket_recreated = Counter(
            "sidecar_unix_socket_recreated", "Times the Unix socket file was found deleted and was recreated.", registry=registry
        )
        self.accept_errors = Counter(
            "sidecar_accept_errors",
            "accept() calls that failed for lack of resources (EMFILE: out of file descriptors); the client waits in the backlog and is retried.",
            ["listener", "error"],
            registry=registry,
        )
        self.http_header_timeouts = Counter(
            "sidecar_http_header_timeouts",
            "HTTP connections closed because a request's headers took longer than ingest.header_timeout.",
            registry=registry,
        )
        self.http_header_too_large = Counter(
            "sidecar_http_header_too_large",
            "HTTP requests refused with 431 because their headers exceeded 64 KiB.",
            registry=registry,
        )
        self.http_body_timeouts = Counter(
            "sidecar_http_body_timeouts",
            "HTTP requests whose body was not complete within ingest.body_timeout of its headers (answered 408).",
            registry=registry,
        )
        self.http_connections_refused = Counter(
            "sidecar_http_connections_refused",
            "HTTP connections refused with 503 because ingest.max_http_connections were open.",
            registry=registry,
        )
        self.tasks = Gauge("sidecar_asyncio_tasks", "asyncio tasks alive in the sidecar's event loop (a leak shows here).", registry=registry)
        self.queue_depth = Gauge("sidecar_pipeline_queue_batches", "Batches waiting for the pipeline.", registry=registry)
        self.scrape_duration = Histogram(
            "sidecar_scrape_duration_seconds",
            "Time to render /metrics.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        build = Gauge("sidecar_build_info", "Always 1; the version label says which build runs.", ["version"], registry=registry)
        build.labels(__version__).set(1)
        ProcessCollector(registry=registry)

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Report the loop's task count (read from the scrape thread; all_tasks copes with that)."""
        self.tasks.set_function(lambda: len(asyncio.all_tasks(loop)))

    def count(self, transport: str, accepted: int, rejections: list[Rejection], dropped: int = 0) -> None:
        """Record one read or request: every item is accepted, rejected or dropped."""
        received = accepted + len(rejections) + dropped
        if not received:
            return
        self.received.labels(transport).inc(received)
        if accepted:
            self.accepted.labels(transport).inc(accepted)
        if rejections:
            by_reason: dict[str, int] = {}
            for r in rejections:
                by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
            for reason, n in by_reason.items():
                self.rejected.labels(transport, reason).inc(n)
        if dropped:
            self.dropped.labels("queue_full").inc(dropped)

    def totals(self) -> dict[str, int]:
        """Whole-process totals for the final log line: received = accepted + rejected + dropped,
        and accepted = processed + sink_dropped once the pipeline has drained."""
        out = {}
        for name in ("received", "accepted", "rejected", "dropped", "processed", "sink_dropped"):
            total = 0.0
            for metric in getattr(self, name).collect():
                total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
            out[name] = int(total)
        return out
