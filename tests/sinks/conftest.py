import pytest

from sidecar.sinks.window import SortedValues
from sidecar.sinks.window import store as window_mod


@pytest.fixture
def small_structures(monkeypatch):
    """Fold sorted buffers and grow the store early, so small examples reach every code path."""
    monkeypatch.setattr(SortedValues, "FOLD_MIN", 4)
    monkeypatch.setattr(window_mod, "INITIAL_CAPACITY", 4)
    monkeypatch.setattr(window_mod, "FLUSH_EVENTS", 7)
    monkeypatch.setattr(window_mod, "WAIT_BELOW", 3)
