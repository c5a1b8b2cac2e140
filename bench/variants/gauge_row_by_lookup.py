"""bench/ab_pipeline.py variant: each lifecycle start looks its gauge row up in the table (as before
2026-12-02 15:00), not in the per-name cache."""

from sidecar.sinks.metrics import MAX_LABEL_LENGTH, _Lifecycle


class _Uncached(_Lifecycle):
    __slots__ = ()

    def start(self, ident, now, name):
        open_ = self.open
        if ident in open_:
            return
        if len(open_) >= self.max_active:
            self.untracked += 1
            return
        if ident in self.ended:
            del self.ended[ident]
        label = (name or "")[:MAX_LABEL_LENGTH]
        row = self.gauges.row((label,))
        open_[ident] = (row, now, label)
        self.opened.append(row)


def setup(decoder, sinks):
    metrics = sinks.metrics
    for name in ("_runs", "_invocations"):
        fresh = getattr(metrics, name)  # nothing tracked yet: the variant is built fresh
        setattr(metrics, name, _Uncached(fresh.max_active, fresh.gauges))
