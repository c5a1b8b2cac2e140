"""bench/ab_pipeline.py variant: label values decoded as fresh strings and swapped for the kept
ones, as before 2026-12-02 23:30 (no literal decoders: sidecar.known_labels)."""

from sidecar.known_labels import KnownLabels


def setup(decoder, sinks):
    decoder.known = KnownLabels(max_values=0)  # full at the first value: never built
