"""The soak's 60-second smoke version: it asserts the invariants, never the timings."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_one_minute_soak_with_label_churn_keeps_every_invariant(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "bench/soak.py", "--duration", "60s", "--rate", "5000", "--churn", "10s", "--json", str(out)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
    report = json.loads(out.read_text())
    assert report["violations"] == [], run.stdout + run.stderr
    c = report["counters"]
    assert report["sent"] == c["received"] == c["accepted"] == c["processed"] > 0  # conservation, exactly
    assert c["rejected"] == c["dropped"] == 0
    assert report["end"]["fds"] <= report["start"]["fds"] + 2  # no descriptor leak
    assert report["end"]["tasks"] <= report["start"]["tasks"] + 2  # no task leak
    assert report["series_max"] <= 40 * 700  # bounded by the cap despite the churn
    assert report["exit_code"] == 0 and "stopped: received=" in report["final_line"]
    readers = report["readers"]  # 10 live-tail clients, 3 of which never read; /v1/stats every 100 ms
    assert readers["tail_never_read"] == 3 and len(readers["tail_readers"]) == 7
    assert all(c["error"] is None and c["messages"] > 0 for c in readers["tail_readers"])
    assert readers["stats_requests"] > 0 and readers["stats_errors"] == {}
    assert run.returncode == 0
