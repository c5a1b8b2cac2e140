"""bench/ab_pipeline.py variant: the window store takes no batch."""


def setup(decoder, sinks):
    sinks.window.consume = lambda batch: None
