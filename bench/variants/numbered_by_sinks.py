"""bench/ab_pipeline.py variant: the decoder shares and fills labels but does not number label sets;
the first sink numbers each batch (as before 2026-12-02 09:30)."""


def setup(decoder, sinks):
    decoder.label_sets = None  # decode_numbered gives no numbers: the sinks' LabelSets.of makes them
