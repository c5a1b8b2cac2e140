"""The window sink: exact statistics over sliding windows of event time.

    sorted_values.py  a sorted multiset with exact rank selection (pure numpy)
    store.py          the store: rows, windows, counters, sampling; the only code that changes state
    view.py           the read-only snapshot a query or a scrape reads
    query.py          the /v1/stats document from a snapshot (bounded work and size)
    collector.py      the Prometheus families from a snapshot
    sink.py           WindowSink: the pipeline's, the route's and the scrape's entry points
"""

from sidecar.sinks.window.sink import WindowSink
from sidecar.sinks.window.sorted_values import PERCENTILES, SortedValues, nearest_rank
from sidecar.sinks.window.view import DIMENSIONS

__all__ = ["DIMENSIONS", "PERCENTILES", "SortedValues", "WindowSink", "nearest_rank"]
