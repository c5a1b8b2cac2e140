"""`agent-sidecar stats` against a real sidecar: a table by default, JSON with --json."""

from __future__ import annotations

import json

from sidecar.cli import main
from sidecar.testing import FakeClock, event, ndjson, running_sidecar


def test_stats_prints_a_table_of_every_window_and_since_start(capsys):
    clock = FakeClock()
    with running_sidecar(clock=clock) as s:
        s.send_unix(ndjson(*[event(agent="planner", duration_ms=float(ms), cost_usd=0.01) for ms in range(1, 11)]))
        s.wait_processed(10)
        assert main(["stats", "--url", s.url]) == 0
    out = capsys.readouterr().out
    assert "agent-sidecar stats as of 2026-09-21T14:13:20.000Z" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert lines["1m"][1:9] == ["10", "0.0", "0.17", "5.0", "9.0", "10.0", "10.0", "10.0"]
    assert lines["since"][:3] == ["since", "start", "10"]


def test_stats_by_agent_with_json_prints_the_raw_document(capsys):
    clock = FakeClock()
    with running_sidecar(clock=clock, **{"auth.token": "t"}) as s:
        s.send_unix(ndjson(event(agent="a", duration_ms=1.0), event(agent="b", duration_ms=2.0), event(agent="b", duration_ms=3.0)))
        s.wait_processed(3)
        assert main(["stats", "--url", s.url, "--token", "t", "--window", "5m", "--by", "agent", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert [(g["key"], g["events"]) for g in doc["groups"]] == [("b", 2), ("a", 1)]
        assert main(["stats", "--url", s.url, "--token", "t", "--window", "5m", "--by", "agent", "--agent", "b"]) == 0
        table = capsys.readouterr().out
        assert "5m (all)" in table and "\nb " in table and "\na " not in table


def test_stats_reports_http_errors_and_unreachable_sidecars(capsys):
    with running_sidecar() as s:
        assert main(["stats", "--url", s.url, "--window", "7m"]) == 1
        assert "HTTP 400: unknown window '7m'" in capsys.readouterr().err
    assert main(["stats", "--url", s.url]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_the_runs_column_reads_runs_seen_and_an_older_sidecars_workflows_active(capsys):
    from sidecar.commands.stats import render

    clock = FakeClock()
    with running_sidecar(clock=clock) as s:
        s.send_unix(ndjson(*[event(agent="a", run_id=f"r{i % 3}", duration_ms=1.0) for i in range(9)]))
        s.wait_processed(9)
        assert main(["stats", "--url", s.url, "--window", "1m", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs_seen"] == 3
    header, _, row = render(doc).splitlines()[1:4]
    assert header.split()[-1] == "runs" and row.split()[-1] == "3"
    new_only = {k: v for k, v in doc.items() if k != "workflows_active"}  # as after the alias is removed
    assert render(new_only).splitlines()[3].split()[-1] == "3"
    old = {k: v for k, v in doc.items() if k != "runs_seen"}  # a sidecar from before the rename
    assert render(old).splitlines()[3] == render(doc).splitlines()[3]
