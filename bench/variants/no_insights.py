"""bench/ab_pipeline.py variant: the insights store takes no batch (what it costs, with what it shares made by the sinks before it)."""


def setup(decoder, sinks):
    sinks.insights.consume = lambda batch: None
