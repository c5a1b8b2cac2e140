"""The soak's 30-second smoke version: it asserts the invariants, never the timings. It reloads the
config every 5 s (POST /-/reload and SIGHUP in turn), saves the windows every 5 s and churns the
label names every 5 s, as the 30-minute run does every 60 s, 30 s and 60 s."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_half_minute_soak_with_label_churn_reloads_and_snapshots_keeps_every_invariant(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable, "bench/soak.py", "--duration", "30s", "--rate", "5000", "--churn", "5s",
        "--reload-every", "5s", "--snapshot-every", "5s", "--json", str(out),
    ]
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
    reloads = report["reloads"]  # each rewrote the file with two live keys changed and saw both applied
    assert reloads["failed"] == 0 and reloads["ok"] >= 4 and reloads["by"]["POST"] >= 2 and reloads["by"]["SIGHUP"] >= 2
    assert all(r["changed"] == ["metrics.series_ttl", "tail.client_queue"] for r in reloads["list"])
    assert report["snapshot_writes"]["error"] == 0 and report["snapshot_writes"]["ok"] >= 4
    assert all(s["pause_s"] > 0 and s["duration_s"] >= s["pause_s"] and s["bytes"] > 0 for s in report["snapshots"])
    restart = report["restart"]  # the file the SIGTERM wrote, restored by a new sidecar, answers the same totals
    assert restart["age_at_stop_s"] <= 0 and restart["restored"] == 1 and restart["exit_code"] == 0
    assert restart["cumulative_events"] == report["stats_cumulative_events"] == c["processed"]
    assert run.returncode == 0
