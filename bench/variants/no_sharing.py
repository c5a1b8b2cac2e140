"""bench/ab_pipeline.py variant: the decoder does not share label values between events (as before 0bbcc09)."""


def setup(decoder, sinks):
    decoder._share = lambda events: None
