"""agent-sidecar: turn an agent process's JSON events into Prometheus metrics,
exact rolling-window statistics and a live tail."""

__version__ = "0.1.0"
