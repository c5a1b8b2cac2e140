"""The HTTP routes that read the sidecar's state, one module per path.

Ingest routes (`POST /v1/events`) are listeners and live in `sidecar.ingest`;
these only read what the sinks hold and never feed the pipeline.
"""
