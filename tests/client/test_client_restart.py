"""End to end: the client SDK against real `agent-sidecar run` processes that die, stop and come back."""

import re
import signal
import socket
import threading
import time

from sidecar.client import Emitter

DURING = {"type": "llm.call", "agent": "during", "workflow": "", "severity": "info"}


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def final_counts(proc) -> dict[str, int]:
    """The totals a sidecar logs as it stops gracefully."""
    m = re.search(r"received=(\d+) accepted=(\d+) rejected=(\d+) dropped=(\d+) processed=(\d+)", proc.output)
    return dict(zip(("received", "accepted", "rejected", "dropped", "processed"), map(int, m.groups())))


def test_a_killed_sidecar_restarted_gets_everything_the_buffer_held_and_the_rest_is_counted(spawn, tmp_path, scrape):
    path = str(tmp_path / "agent.sock")
    first = spawn("--unix", path)
    emitter = Emitter(unix=path, max_buffer=300, batch_size=100, max_backoff=0.1)
    for _ in range(4):
        for _ in range(250):
            emitter.emit("llm.call", agent="before")
        assert emitter.flush(30)
    assert scrape(first.url, "sidecar_events_accepted_total", {"transport": "unix"}) == 1000
    first.stop(signal.SIGKILL)

    results = [emitter.emit("llm.call", agent="during") for _ in range(2000)]
    held = emitter.buffered
    assert held == results.count(True) and held <= 300 + 100
    assert emitter.drops == {"buffer_full": 2000 - held}

    second = spawn("--unix", path)  # the same path: the stale socket file is replaced
    assert emitter.flush(30)
    assert wait_for(lambda: scrape(second.url, "agent_events_total", DURING) == held)
    assert scrape(second.url, "sidecar_events_accepted_total", {"transport": "unix"}) == held
    assert emitter.sent == 1000 + held and emitter.unconfirmed == 0
    assert emitter.close()


def test_a_sidecar_stopped_and_restarted_mid_stream_never_counts_twice_and_accounts_for_every_event(spawn, tmp_path, scrape):
    path = str(tmp_path / "agent.sock")
    first = spawn("--unix", path)
    emitter = Emitter(unix=path, max_buffer=5000, batch_size=200, commit_every=2000, max_backoff=0.1)
    total = 15_000

    def produce() -> None:
        for i in range(total):
            emitter.emit("llm.call", agent="during", payload="p" * 200)
            if i % 200 == 0:
                time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    assert wait_for(lambda: emitter.sent >= 2000)
    assert first.stop(signal.SIGTERM) == 0  # while the producer and the flusher stream
    second = spawn("--unix", path)
    producer.join()
    assert emitter.flush(30)
    before = final_counts(first)
    assert wait_for(lambda: scrape(second.url, "agent_events_total", DURING) == scrape(second.url, "sidecar_events_accepted_total", {"transport": "unix"}))
    arrived = before["processed"] + (scrape(second.url, "agent_events_total", DURING) or 0)
    # nothing counted twice; every event either arrived, was dropped (counted) or was on a
    # connection that broke (counted as unconfirmed: some of those may have arrived)
    assert arrived + emitter.dropped <= total <= arrived + emitter.dropped + emitter.unconfirmed
    assert emitter.sent <= arrived and set(emitter.drops) <= {"buffer_full"}
    assert before["rejected"] <= 1  # at most one line cut in half by the stop
    assert emitter.close()


def test_http_emitter_waits_for_a_sidecar_that_starts_later_and_delivers_exactly(spawn, scrape):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    emitter = Emitter(url=url, max_backoff=0.1)
    for _ in range(700):
        emitter.emit("llm.call", agent="during")
    assert emitter.flush(0.3) is False and emitter.buffered == 700
    proc = spawn("--http", f"127.0.0.1:{port}")
    assert emitter.flush(30)
    assert wait_for(lambda: scrape(proc.url, "agent_events_total", DURING) == 700)
    assert scrape(proc.url, "sidecar_events_accepted_total", {"transport": "http"}) == 700
    assert emitter.stats()["sent"] == 700 and emitter.dropped == 0 and emitter.unconfirmed == 0
    proc.stop(signal.SIGKILL)
    emitter.emit("llm.call", agent="after")
    assert emitter.close(0.3) is False and emitter.drops == {"unsent": 1}
