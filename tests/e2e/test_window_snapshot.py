"""Windows that survive a restart, with real `agent-sidecar run` processes talked to from outside:
a clean restart against a sidecar that never stopped (the oracle), kill -9, bad files, a failing disk."""

import math
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from sidecar.client.senders import send_unix
from sidecar.testing import SidecarProcess, event, ndjson, wait_until

LIVENESS = 15


def config(path, every: str = "30s", durations: str = "[15m, 1h]") -> str:
    return f"windows:\n  durations: {durations}\n  snapshot_path: {path}\n  snapshot_every: {every}\n"


def metric(proc: SidecarProcess, name: str, labels: str = "") -> float:
    text = httpx.get(proc.url + "/metrics", timeout=LIVENESS).text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def send(proc: SidecarProcess, events: list[dict]) -> None:
    before = metric(proc, "sidecar_events_processed_total")
    for i in range(0, len(events), 500):
        send_unix(proc.unix, ndjson(*events[i : i + 500]))
    wait_until(lambda: metric(proc, "sidecar_events_processed_total") == before + len(events), "the events processed")


def stream(n: int, start: float, span: float, first_run: int = 0) -> list[dict]:
    """Events spread over [start, start + span), several agents and models, runs of 10 events."""
    return [
        event(
            ("llm.call", "tool.call", "agent.failed")[i % 3], agent=f"agent-{i % 5}", model=("m1", "m2")[i % 2],
            workflow=("review", "deploy", None)[i % 3], tool=("grep", None)[i % 2],
            timestamp=start + span * i / n, duration_ms=(i * 37) % 5000 + 0.25, input_tokens=i % 90, output_tokens=i % 13,
            cost_usd=(i % 17) / 1000, run_id=f"run-{first_run + i // 10}",
        )
        for i in range(n)
    ]


QUERIES = ["", "?window=15m", "?window=1h&by=agent", "?window=1h&agent=agent-2", "?window=15m&by=model&type=tool.call", "?by=tool"]


def answers(proc: SidecarProcess) -> list[dict]:
    out = []
    for query in QUERIES:
        doc = httpx.get(proc.url + "/v1/stats" + query, timeout=LIVENESS).json()
        doc.pop("as_of", None)
        if "cumulative" in doc:  # since start: its length and rates depend on when each process started
            doc["cumulative"] = without(doc["cumulative"], ("window_seconds", "rates"))
        out.append(doc)
    return out


def without(doc: object, keys: tuple[str, ...]) -> object:
    if isinstance(doc, dict):
        return {k: without(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [without(v, keys) for v in doc]
    return doc


def assert_same(got: object, want: object, path: str = "") -> None:
    """Equal, floats to 1e-12: two processes read the socket in different batches, and a float
    sum's last bit depends on how it was grouped (the in-process oracle test is bit for bit)."""
    if isinstance(want, dict) and isinstance(got, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-12), (path, got, want)
    else:
        assert got == want, (path, got, want)


@pytest.mark.untraced
def test_after_a_clean_restart_stats_are_exactly_those_of_a_sidecar_that_never_stopped(spawn, tmp_path):
    path = tmp_path / "windows.npz"
    now = time.time()
    # Inside both windows for the whole test (and out of the 1m/5m edges that move with the clock).
    first, second = stream(3000, now - 600, 200), stream(2000, now - 400, 200, first_run=300)
    never_stopped = spawn(config="windows:\n  durations: [15m, 1h]\n")

    before = spawn(config=config(path))
    assert "window snapshot" in before.output and "no file yet" in before.output
    send(before, first)
    send(never_stopped, first)
    assert_same(answers(before), answers(never_stopped))
    last = answers(before)
    assert before.stop() == 0
    assert re.search(r"window snapshot .* written: \d+ bytes", before.output)

    after = spawn(config=config(path))
    assert "window snapshot" in after.output and "restored 3000 events" in after.output
    assert answers(after) == last  # bit for bit what it answered before the restart
    assert_same(answers(after), answers(never_stopped))
    send(after, second)
    send(never_stopped, second)
    assert_same(answers(after), answers(never_stopped))
    assert metric(after, "sidecar_window_snapshot_loads_total", '{result="restored"}') == 1
    doc = httpx.get(after.url + "/v1/stats").json()
    assert doc["windows"]["1h"]["events"] == 5000 and doc["windows"]["1h"]["exact"] is True


def test_after_kill_9_at_most_one_interval_is_missing_and_the_windows_say_so_until_it_has_left_them(spawn, tmp_path):
    path = tmp_path / "windows.npz"
    proc = spawn(config=config(path, every="300ms", durations="[2s, 1h]"))
    saved = stream(200, time.time(), 0.001)
    send(proc, saved)
    writes = metric(proc, "sidecar_window_snapshot_writes_total", '{result="ok"}')
    wait_until(lambda: metric(proc, "sidecar_window_snapshot_writes_total", '{result="ok"}') >= writes + 2, "a save after the events")
    send_unix(proc.unix, ndjson(*stream(100, time.time(), 0.001, first_run=100)))  # maybe saved, maybe not
    proc.kill()
    proc.wait()

    again = spawn(config=config(path, every="300ms", durations="[2s, 1h]"))
    assert "from a periodic save (the sidecar did not shut down cleanly)" in again.output
    doc = httpx.get(again.url + "/v1/stats").json()
    assert 200 <= doc["windows"]["1h"]["events"] <= 300  # what was saved; at most one interval missing
    assert doc["windows"]["2s"]["exact"] is False and doc["windows"]["1h"]["exact"] is False
    # The 2s window no longer covers the restart 2 s later: exact again. The 1h window still does.
    wait_until(lambda: httpx.get(again.url + "/v1/stats?window=2s").json()["exact"], "the gap leaves the 2s window")
    assert httpx.get(again.url + "/v1/stats?window=1h").json()["exact"] is False


@pytest.mark.untraced
def test_a_damaged_snapshot_is_a_warning_and_an_empty_start_then_replaced_at_shutdown(spawn, tmp_path):
    path = tmp_path / "windows.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    proc = spawn(config=config(path))
    assert re.search(r"WARNING .*window snapshot .* ignored \(unreadable\), the windows start empty: not a readable \.npz file", proc.output)
    assert metric(proc, "sidecar_window_snapshot_loads_total", '{result="unreadable"}') == 1
    assert httpx.get(proc.url + "/v1/stats?window=1h").json()["events"] == 0
    send(proc, stream(10, time.time(), 1))
    assert proc.stop() == 0

    again = spawn(config=config(path))
    assert "restored 10 events" in again.output


def test_a_snapshot_that_cannot_be_written_is_logged_and_counted_and_serving_goes_on(spawn, tmp_path):
    directory = tmp_path / "state"
    directory.mkdir()
    proc = spawn(config=config(directory / "windows.npz", every="200ms"))
    directory.rmdir()  # the volume went away
    wait_until(lambda: metric(proc, "sidecar_window_snapshot_writes_total", '{result="error"}') >= 1, "a failed save")
    assert "window snapshot" in proc.logged("not written, the previous one stays: No such file or directory")
    send(proc, stream(10, time.time(), 1))
    assert httpx.get(proc.url + "/healthz").status_code == 200
    assert proc.stop() == 0  # the shutdown save fails too: logged, still a clean exit


def test_check_config_refuses_a_snapshot_path_in_a_missing_directory(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text(config(tmp_path / "nowhere" / "windows.npz"))
    done = subprocess.run([sys.executable, "-m", "sidecar", "check-config", str(file)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert f"windows.snapshot_path: directory {tmp_path / 'nowhere'} does not exist" in done.stderr


@pytest.mark.untraced
def test_sigterm_during_a_periodic_save_still_ends_with_the_shutdown_save(spawn, tmp_path):
    path = tmp_path / "windows.npz"
    proc = spawn(config=config(path, every="50ms"))
    send(proc, stream(2000, time.time() - 100, 50))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(LIVENESS) == 0
    again = spawn(config=config(path))
    assert "restored 2000 events" in again.output and "periodic save" not in again.output
