"""bench/ab_pipeline.py variant: the window store interns run ids with a loop over the batch's events
(as before 2026-12-02 09:00), not by set operations on the new ids."""

from sidecar.sinks.window.store import _cut


def setup(decoder, sinks):
    store = sinks.window.store

    def run_numbers(idents):
        get_run = store.run_ids.get
        runs = [get_run(ident, -2) for ident in idents]
        if -2 in runs:
            new, fresh = [], {}
            for i, rid in enumerate(runs):
                if rid == -2:
                    ident = idents[i]
                    rid = fresh.get(ident, -2)
                    if rid == -2:
                        name = _cut(ident)
                        rid = get_run(name, -2)
                        if rid == -2:
                            rid = store._intern_run(name)
                            new.append(name)
                        fresh[ident] = rid
                    runs[i] = rid
            store.runs_seen += store._run_hashes.add_new(new)
        return runs

    store._run_numbers = run_numbers
