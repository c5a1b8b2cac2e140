"""Listeners: bytes in, batches out. Each knows nothing about sinks."""
