"""`agent-sidecar demo`: the simulated stream is valid and realistic, and it reaches a real sidecar."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import pytest

from sidecar import cli
from sidecar.commands.demo import AGENTS, INVALID_LINES, MODELS, WORKFLOWS, Odds, Simulation
from sidecar.protocol import EventDecoder
from sidecar.testing import running_sidecar


def take(sim: Simulation, n: int) -> list[dict]:
    return [next(sim) for _ in range(n)]


@pytest.fixture(scope="module")
def stream() -> tuple[Simulation, list[dict]]:
    sim = Simulation(seed=42, workflows=8)
    return sim, take(sim, 20_000)


def test_every_simulated_event_is_accepted_by_the_decoder(stream):
    _, events = stream
    now = time.time()
    decoded, _, rejected = EventDecoder().decode([json.dumps({**e, "timestamp": now}).encode() for e in events], now)
    assert rejected == []
    assert len(decoded) == len(events)


def test_the_same_seed_gives_the_same_stream():
    assert take(Simulation(seed=3), 500) == take(Simulation(seed=3), 500)
    assert take(Simulation(seed=3), 500) != take(Simulation(seed=4), 500)


def test_runs_are_concurrent_and_every_run_starts_before_it_ends(stream):
    sim, events = stream
    by_run = defaultdict(list)
    for e in events:
        by_run[e["run_id"]].append(e["type"])
    assert len(by_run) <= sim.started <= len(by_run) + 8  # started runs whose first event is still queued
    ends = Counter()
    for types in by_run.values():
        assert types[0] == "workflow.started"
        assert types.count("workflow.started") == 1
        last = types[-1]
        if last in ("workflow.completed", "workflow.failed"):
            ends[last] += 1
            assert types.count(last) == 1
    assert ends["workflow.completed"] == sim.outcomes["completed"]
    assert ends["workflow.failed"] == sim.outcomes["failed"]
    # Runs interleave: within the first 200 events all 8 slots are busy at once (abandoned runs stay open).
    open_runs, most = set(), 0
    for e in events[:200]:
        if e["type"] == "workflow.started":
            open_runs.add(e["run_id"])
        elif e["type"] in ("workflow.completed", "workflow.failed"):
            open_runs.discard(e["run_id"])
        most = max(most, len(open_runs))
    assert most >= 8


def test_invocations_are_paired_and_failures_propagate_to_the_run(stream):
    _, events = stream
    invoked, ended = Counter(), Counter()
    for e in events:
        if e["type"] == "agent.invoked":
            invoked[e["invocation_id"]] += 1
        elif e["type"] in ("agent.completed", "agent.failed"):
            ended[e["invocation_id"]] += 1
            assert invoked[e["invocation_id"]] == 1
    by_run = defaultdict(list)
    for e in events:
        by_run[e["run_id"]].append(e["type"])
    failed = [types for types in by_run.values() if "agent.failed" in types]
    assert failed
    for types in failed:  # a failed agent fails its run at once (the stream may end in between)
        assert types[types.index("agent.failed") + 1:] in ([], ["workflow.failed"])
    assert all("agent.failed" in types for types in by_run.values() if "workflow.failed" in types)


def test_events_are_in_simulated_time_order_with_realistic_durations(stream):
    sim, events = stream
    assert sim.now > 0
    llm = [e["duration_ms"] for e in events if e["type"] == "llm.call" and e.get("success", True)]
    assert 250 <= min(llm) and sorted(llm)[len(llm) // 2] < 15_000
    assert any(e.get("error") == "timeout" and e["duration_ms"] == 30_000 for e in events)


def test_the_stream_shows_every_agent_model_workflow_and_kind_of_trouble(stream):
    sim, events = stream
    assert {e.get("agent") for e in events} - {None} == set(AGENTS)
    assert {e.get("model") for e in events} - {None} == set(MODELS)
    assert {e["workflow"] for e in events} == set(WORKFLOWS)
    assert {e.get("error") for e in events} - {None} == {"rate_limited", "timeout", "context_length_exceeded", "tool_error"}
    assert {e["type"] for e in events} == {
        "workflow.started", "workflow.completed", "workflow.failed", "agent.invoked", "agent.completed",
        "agent.failed", "llm.call", "tool.call",
    }
    assert any(e.get("attempt", 1) > 1 for e in events)  # retries
    assert {e["severity"] for e in events if "severity" in e} == {"warning", "error"}
    assert all(sim.outcomes.values())  # completed, failed and abandoned runs
    # The reviewer sometimes sends the work back: the coder runs twice in one run.
    coder_runs = Counter(e["run_id"] for e in events if e["type"] == "agent.invoked" and e["agent"] == "coder")
    assert max(coder_runs.values()) == 2


def test_costs_follow_the_models_list_prices(stream):
    _, events = stream
    for e in events:
        if "cost_usd" in e:
            price_in, price_out = MODELS[e["model"]]
            assert e["cost_usd"] == pytest.approx((e["input_tokens"] * price_in + e["output_tokens"] * price_out) / 1e6)


def test_abandon_fraction_controls_abandoned_runs():
    none = Simulation(seed=1, odds=Odds(abandon=0.0))
    take(none, 5000)
    assert none.outcomes["abandoned"] == 0
    every = Simulation(seed=1, odds=Odds(abandon=1.0))
    events = take(every, 2000)
    assert every.outcomes["completed"] == every.outcomes["failed"] == 0
    assert not any(e["type"].startswith("workflow.") and e["type"] != "workflow.started" for e in events)


def _summary(err: str) -> tuple[int, int]:
    m = re.search(r"sent (\d+) lines \((\d+) invalid\)", err)
    assert m, err
    return int(m[1]), int(m[2])


def _wait_received(sidecar, transport: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while (sidecar.value("sidecar_events_received_total", {"transport": transport}) or 0) < n:
        assert time.monotonic() < deadline, "the sidecar did not receive everything the demo sent"
        time.sleep(0.01)


@pytest.mark.parametrize("transport", ["unix", "http"])
def test_demo_sends_rate_times_duration_lines_and_the_sidecar_accounts_for_each(sidecar, capsys, transport):
    target = ["--unix", sidecar.unix] if transport == "unix" else ["--url", sidecar.url]
    rc = cli.main(["demo", *target, "--rate", "2000", "--duration", "0.5", "--seed", "5", "--invalid", "0.02"])
    assert rc == 0
    sent, invalid = _summary(capsys.readouterr().err)
    assert sent == 1000 and invalid > 0
    _wait_received(sidecar, transport, sent)
    rejected = sum(
        sidecar.value("sidecar_events_rejected_total", {"transport": transport, "reason": r}) or 0
        for r in ("missing_type", "invalid_field", "invalid_json")
    )
    assert rejected == invalid
    assert sidecar.value("sidecar_events_accepted_total", {"transport": transport}) == sent - invalid
    sidecar.wait_processed(sent - invalid)
    assert sidecar.value("agent_cost_usd_total", {"agent": "coder", "model": "claude-3-5-sonnet"}) > 0


def test_each_kind_of_invalid_line_is_rejected_with_its_reason():
    decoded, _, rejected = EventDecoder().decode(list(INVALID_LINES), time.time())
    assert decoded == []
    assert [r.reason for r in rejected] == ["missing_type", "invalid_field", "invalid_json"]


def test_demo_without_a_sidecar_says_once_that_it_waits_then_names_the_socket(tmp_path, capsys):
    sock = tmp_path / "none.sock"
    assert cli.main(["demo", "--unix", str(sock), "--wait", "0.5", "--duration", "1"]) == 1
    assert capsys.readouterr().err == (
        f"agent-sidecar demo: cannot connect to {sock}: no such file (is `agent-sidecar run` running and listening there?); "
        "retrying every 0.2s for up to 0.5s\n"
        f"agent-sidecar demo: cannot connect to {sock}: no such file (is `agent-sidecar run` running and listening there? set --unix PATH)\n"
    )


def test_demo_rejects_a_rate_that_is_not_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--rate", "0"])
    assert exc.value.code == 2
    assert "must be greater than zero" in capsys.readouterr().err


@pytest.mark.untraced
def test_an_endless_demo_stops_on_ctrl_c_and_reports_exactly_what_it_sent(sidecar):
    demo = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "demo", "--unix", sidecar.unix, "--rate", "500", "--seed", "9"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
    )
    _wait_received(sidecar, "unix", 1)
    demo.send_signal(signal.SIGINT)
    _, err = demo.communicate(timeout=10)
    assert demo.returncode == 0
    sent, _ = _summary(err)
    _wait_received(sidecar, "unix", sent)
    assert sidecar.value("sidecar_events_received_total", {"transport": "unix"}) == sent


def test_a_sender_that_cannot_keep_up_writes_bounded_chunks_and_stops_after_the_grace(monkeypatch):
    from sidecar.commands import demo

    monkeypatch.setattr(demo, "MAX_CHUNK", 100)
    monkeypatch.setattr(demo, "GRACE", 0.0)
    writes = []

    class Target:
        def send(self, lines):
            writes.append(len(lines))

    progress = demo.Progress()
    lines = demo.stream(Simulation(seed=1), demo.random.Random(1), 0.0)
    demo.pace(Target(), lines, rate=1e9, duration=0.01, progress=progress)  # asks for 10 million lines
    assert 0 < progress.sent < 10_000_000
    assert max(writes) == 100 and sum(writes) == progress.sent


def test_a_demo_that_meets_a_503_storm_still_prints_its_summary_and_names_the_error():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with running_sidecar(**{"ingest.queue_size": 1}) as s:
        s.stall_pipeline()  # the first batch fills the queue of one; every later POST gets 503
        demo = subprocess.run(
            [sys.executable, "-m", "sidecar", "demo", "--url", s.url, "--rate", "100", "--duration", "5",
             "--retries", "1", "--seed", "2", "--invalid", "0"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": repo},
        )
    assert demo.returncode == 1, demo.stderr
    lines = demo.stderr.splitlines()
    assert lines[1] == f"agent-sidecar demo: {s.url}/v1/events is overloaded (HTTP 503, queue full); retrying after Retry-After (1s), up to 1 times"
    sent, invalid = _summary(demo.stderr)
    assert sent > 0 and invalid == 0  # the batch the sidecar took
    assert lines[-1] == (
        f"agent-sidecar demo: {s.url}/v1/events stayed overloaded (HTTP 503) through 1 retries "
        "(send slower, or raise ingest.queue_size)"
    )
    assert s.value("sidecar_events_accepted_total", {"transport": "http"}) == sent


def test_history_is_stamped_back_from_now_in_simulated_time():
    from sidecar.commands.demo import history

    end = 1_000_000.0
    sim = Simulation(seed=5, workflows=8)
    lines = [json.loads(line) for line in history(sim, 600.0, end)]
    stamps = [e["timestamp"] for e in lines]
    assert stamps == sorted(stamps)
    assert end - 600.0 <= stamps[0] < end - 590.0 and end - 10.0 < stamps[-1] < end
    assert sim.next_at() >= 600.0  # the live stream goes on from where the history stopped


def test_a_scenario_is_reproducible_and_healthy_is_the_stream_without_scenarios():
    from sidecar.commands.demo import scenario

    assert take(Simulation(seed=3, fault=scenario("healthy")), 500) == take(Simulation(seed=3), 500)
    assert take(Simulation(seed=3, fault=scenario("retry_storm")), 500) == take(Simulation(seed=3, fault=scenario("retry_storm")), 500)


def test_a_latency_regression_starts_at_its_onset():
    from sidecar.commands.demo import history, scenario

    sim = Simulation(seed=2, workflows=24, fault=scenario("latency_regression", onset=600.0))
    before, after = [], []
    for e in map(json.loads, history(sim, 1200.0, 10_000.0)):
        if e["type"] == "llm.call" and e.get("model") == "gpt-4o" and e.get("success") is not False:
            (after if e["timestamp"] >= 10_000.0 - 600.0 + 60 else before if e["timestamp"] < 10_000.0 - 600.0 else []).append(e["duration_ms"])
    assert len(before) > 100 and len(after) > 100
    assert sum(after) / len(after) > 3 * sum(before) / len(before)


def test_an_unknown_scenario_or_a_history_past_the_hour_is_refused(capsys):
    for argv in (["demo", "--scenario", "nope"], ["demo", "--history", "2h"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "--history: must be at most 1h" in err
