"""Sinks: batches in, state out. Each knows nothing about transports."""
