"""bench/ab_pipeline.py variant: the sinks find failed events and events with a tool by testing every
event (as before 2026-12-02 09:00), not through their label-set numbers."""


def setup(decoder, sinks):
    label_sets = sinks.metrics.label_sets  # this variant's own, shared by its sinks

    def events_of(batches):
        return batches[0].events if len(batches) == 1 else [e for b in batches for e in b.events]

    label_sets.failed = lambda batches: [i for i, e in enumerate(events_of(batches)) if e.success is False]
    label_sets.tools = lambda batches: [i for i, e in enumerate(events_of(batches)) if e.tool is not None]
