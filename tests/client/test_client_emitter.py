"""Emitter against a real running sidecar (and a real capture socket for the exact bytes)."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import warnings
from datetime import datetime, timezone

import pytest

from sidecar.client import DEFAULT_SOCKET, Emitter, InvalidEvent
from sidecar.testing import running_sidecar

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_emitted_event_arrives_and_is_counted_exactly(sidecar):
    emitter = Emitter(unix=sidecar.unix, batch_size=300, commit_every=1000)
    types = ["llm.call", "tool.called", "agent.failed"]
    for i in range(6000):
        assert emitter.emit(types[i % 3], agent=f"a{i % 2}", workflow="w", duration_ms=float(i % 50), input_tokens=i % 7)
    assert emitter.flush(30)
    sidecar.wait_processed(6000)
    assert sidecar.value("sidecar_events_accepted_total", {"transport": "unix"}) == 6000
    assert sidecar.value("sidecar_events_rejected_total", {"transport": "unix", "reason": "invalid_json"}) is None
    for t in types:
        for agent, severity in (("a0", "info"), ("a1", "info")):
            severity = "error" if t == "agent.failed" else severity
            assert sidecar.value("agent_events_total", {"type": t, "agent": agent, "workflow": "w", "severity": severity}) == 1000
    assert sidecar.value("agent_tokens_total", {"agent": "a0", "model": "", "token_type": "input"}) == sum(
        i % 7 for i in range(0, 6000, 2)
    )
    assert emitter.stats() | {"target": None} == {
        "target": None, "sent": 6000, "buffered": 0, "dropped": 0, "unconfirmed": 0, "drops": {}
    }
    assert emitter.close()


def test_http_transport_delivers_and_counts_exactly_with_the_token():
    with running_sidecar(**{"auth.token": "s3cret"}) as sidecar:
        emitter = Emitter(url=sidecar.url, token="s3cret", batch_size=250)
        for i in range(1000):
            emitter.emit("llm.call", agent="a", model="m", cost_usd=0.5)
        assert emitter.flush(30)
        sidecar.wait_processed(1000)
        assert sidecar.value("sidecar_events_accepted_total", {"transport": "http"}) == 1000
        assert sidecar.value("agent_cost_usd_total", {"agent": "a", "model": "m"}) == 500
        assert emitter.sent == 1000 and emitter.dropped == 0
        emitter.close()


def test_a_wrong_token_is_refused_counted_and_logged_once(caplog):
    with running_sidecar(**{"auth.token": "s3cret"}) as sidecar:
        emitter = Emitter(url=sidecar.url, token="wrong", batch_size=10)
        with caplog.at_level(logging.WARNING, "sidecar.client"):
            for _ in range(50):
                emitter.emit("llm.call")
            assert emitter.flush(30)
        assert emitter.drops == {"refused": 50} and emitter.sent == 0
        assert [r.getMessage() for r in caplog.records] == [
            "sidecar.client: the sidecar refused a batch of 10: HTTP 401: missing or wrong bearer token"
        ]
        assert sidecar.value("sidecar_events_received_total", {"transport": "http"}) is None
        emitter.close()


@pytest.mark.parametrize(
    ("event_type", "fields", "reason"),
    [
        ("Bad Type", {}, "`type` must be a dotted lower-case name"),
        ("llm.call", {"duration_ms": -1.0}, "`duration_ms` must be a finite number >= 0"),
        ("llm.call", {"input_tokens": 2.5}, "`input_tokens` must be an integer >= 0"),
        ("llm.call", {"severity": "loud"}, "`severity` must be one of"),
        ("llm.call", {"success": "yes"}, "`success` must be true or false"),
        ("llm.call", {"timestamp": "noon"}, "`timestamp` must be epoch seconds"),
        ("llm.call", {"agent": 7}, "`agent` must be a string"),
        (None, {}, "`type` must be a dotted lower-case name"),
    ],
)
def test_invalid_events_are_dropped_counted_and_never_sent(capture, event_type, fields, reason, caplog):
    emitter = Emitter(unix=capture.path)
    with caplog.at_level(logging.WARNING, "sidecar.client"):
        assert emitter.emit(event_type, **fields) is False
        assert emitter.emit("llm.call", agent="ok") is True
    assert reason in caplog.text
    assert emitter.close(10)
    assert emitter.drops == {"invalid": 1} and emitter.sent == 1
    assert [e["agent"] for e in capture.events()] == ["ok"]
    with pytest.raises(InvalidEvent, match=reason.replace("`", ".").replace("(", ".")):
        Emitter(unix=capture.path, strict=True).emit(event_type, **fields)


def test_timestamps_are_stamped_now_or_converted_and_defaults_are_merged(capture):
    emitter = Emitter(unix=capture.path, session_id="s-1")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    emitter.emit("a.one")
    emitter.emit("a.two", timestamp=when, session_id="override")
    emitter.emit("a.three", timestamp="2026-01-02T03:04:05Z", duration_ms=3, success=None, payload={"k": [1, "x"]})
    emitter.emit("a.four", timestamp=12)
    assert emitter.close(10)
    one, two, three, four = capture.events()
    assert isinstance(one["timestamp"], float) and one["session_id"] == "s-1" and one["type"] == "a.one"
    assert two["timestamp"] == when.timestamp() and two["session_id"] == "override"
    assert three["timestamp"] == when.timestamp() and three["payload"] == {"k": [1, "x"]} and three["duration_ms"] == 3
    assert four["timestamp"] == 12


def test_invalid_default_fields_are_refused_at_construction():
    with pytest.raises(InvalidEvent, match="`agent` must be a string"):
        Emitter(unix="/x", agent=5)
    with pytest.raises(ValueError, match="not both"):
        Emitter(unix="/x", url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="must look like"):
        Emitter(url="ftp://host")


def test_events_that_are_not_json_or_too_large_are_dropped_and_counted(capture):
    emitter = Emitter(unix=capture.path, max_event_bytes=1000)
    emitter.emit("x.a", payload=object())
    emitter.emit("x.c", payload="y" * 2000)
    emitter.emit("x.d", payload="fine")
    assert emitter.close(10)
    assert emitter.drops == {"not_json": 1, "too_large": 1}
    assert [e["type"] for e in capture.events()] == ["x.d"]


def test_non_finite_floats_inside_a_payload_never_reach_the_wire_as_invalid_json(capture):
    # msgspec (installed beside the sidecar) writes them as null; the stdlib fallback drops the event.
    emitter = Emitter(unix=capture.path)
    emitter.emit("x.b", payload={"score": float("nan")})
    assert emitter.close(10)
    assert [e.get("payload") for e in capture.events()] == [{"score": None}]


def test_environment_chooses_the_target(monkeypatch):
    for name in ("AGENT_SIDECAR_SOCKET", "AGENT_SIDECAR_URL", "AGENT_SIDECAR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert Emitter().target == f"unix:{DEFAULT_SOCKET}"
    monkeypatch.setenv("AGENT_SIDECAR_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("AGENT_SIDECAR_TOKEN", "t")
    emitter = Emitter()
    assert emitter.target == "http://127.0.0.1:9/" and emitter._transport._http._headers["Authorization"] == "Bearer t"
    monkeypatch.setenv("AGENT_SIDECAR_SOCKET", "/run/s.sock")
    assert Emitter().target == "unix:/run/s.sock"
    assert Emitter(url="http://h:1").target == "http://h:1"


def test_with_no_sidecar_emit_returns_at_once_and_counts_what_the_buffer_cannot_hold(tmp_path, caplog):
    emitter = Emitter(unix=str(tmp_path / "absent.sock"), max_buffer=100, batch_size=10, max_backoff=0.05)
    with caplog.at_level(logging.WARNING, "sidecar.client"):
        results = [emitter.emit("llm.call", agent="a") for _ in range(5000)]
        assert emitter.flush(0.2) is False
    # every event is either still held (buffer + the one batch being retried) or counted
    assert emitter.buffered + emitter.dropped == 5000 == len(results)
    assert emitter.buffered <= 110 and emitter.drops["buffer_full"] == results.count(False)
    assert "unreachable" in caplog.text and caplog.text.count("unreachable") == 1
    assert emitter.close(0.2) is False
    assert emitter.buffered == 0 and emitter.dropped == 5000 and emitter.drops["unsent"] == results.count(True)
    assert emitter.emit("llm.call") is False and emitter.drops["closed"] == 1


def test_a_stalled_sidecar_never_blocks_the_app_and_close_cuts_it_loose(tmp_path):
    path = str(tmp_path / "stalled.sock")
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.bind(path)
    stalled.listen(1)  # accepts into the backlog, never reads: the flusher's write blocks
    emitter = Emitter(unix=path, max_buffer=1000, batch_size=500)
    payload = "p" * 4000
    accepted = sum(emitter.emit("llm.call", payload=payload) for _ in range(20_000))
    assert accepted < 20_000 and emitter.drops["buffer_full"] == 20_000 - accepted
    assert emitter.close(timeout=0.3) is False
    assert not emitter._thread.is_alive()
    assert emitter.sent == 0 and emitter.sent + emitter.dropped + emitter.unconfirmed == 20_000
    stalled.close()


def test_close_delivers_the_rest_and_later_emits_are_dropped_as_closed(sidecar):
    emitter = Emitter(unix=sidecar.unix, flush_interval=60)
    for _ in range(10):
        emitter.emit("llm.call")
    assert emitter.close(10) is True and emitter.close() is True
    sidecar.wait_processed(10)
    assert emitter.emit("llm.call") is False and emitter.drops == {"closed": 1}


def test_an_emitter_that_never_emitted_closes_at_once():
    emitter = Emitter(unix="/nonexistent/x.sock")
    assert emitter.flush(0) is True and emitter.close(0) is True


def test_events_emitted_before_exit_are_delivered_by_the_atexit_hook(sidecar):
    code = (
        "from sidecar.client import Emitter\n"
        f"e = Emitter(unix={sidecar.unix!r}, flush_interval=60)\n"
        "for i in range(250): e.emit('llm.call', agent='exit')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO_ROOT})
    sidecar.wait_processed(250)
    assert sidecar.value("agent_events_total", {"type": "llm.call", "agent": "exit", "workflow": "", "severity": "info"}) == 250


def test_many_threads_emitting_at_once_lose_nothing(sidecar):
    emitter = Emitter(unix=sidecar.unix)

    def work(i: int) -> None:
        for _ in range(2000):
            emitter.emit("llm.call", agent=f"t{i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emitter.close(30)
    sidecar.wait_processed(8000)
    assert [sidecar.value("agent_events_total", {"type": "llm.call", "agent": f"t{i}", "workflow": "", "severity": "info"}) for i in range(4)] == [2000] * 4


async def test_async_code_emits_and_flushes_without_blocking_the_loop(sidecar):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    async with Emitter(unix=sidecar.unix) as emitter:
        for _ in range(500):
            emitter.emit("llm.call", agent="async")
        before = ticks
        assert await emitter.aflush(10)
        assert ticks > before  # the loop kept running while the flush waited
    task.cancel()
    assert emitter.sent == 500
    sidecar.wait_processed(500)


def test_an_unhashable_type_is_invalid_not_a_crash(capture):
    with Emitter(unix=capture.path) as emitter:
        assert emitter.emit(["llm.call"]) is False
    assert emitter.drops == {"invalid": 1}


def test_events_the_sidecar_rejects_over_http_are_counted_as_rejected(sidecar, caplog):
    emitter = Emitter(url=sidecar.url)
    emitter.emit("llm.call", timestamp=4_000_000_000.0)  # valid here, too far ahead for the sidecar's clock
    emitter.emit("llm.call")
    assert emitter.flush(10)
    assert emitter.drops == {"rejected": 1} and emitter.sent == 1
    assert "future_timestamp" in caplog.text
    emitter.close()


@pytest.mark.parametrize("transport", ["unix", "http"])
def test_a_forked_child_starts_its_own_flusher_and_never_touches_the_parents_events(sidecar, transport):
    target = {"unix": sidecar.unix} if transport == "unix" else {"url": sidecar.url}
    emitter = Emitter(**target, flush_interval=60, commit_every=10**9)
    emitter.emit("parent.first")
    assert emitter.flush(10)  # over HTTP the parent now holds a kept-alive connection
    emitter.emit("parent.queued")  # and a queued event when it forks
    with warnings.catch_warnings():  # 3.12+ warns about forking a process that has threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: no copy of the buffer, no use of the parent's connection
        code = 1
        try:
            emitter.emit("child.event")
            code = 0 if emitter.close(10) and emitter.stats()["sent"] == 1 and emitter.dropped == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert emitter.close(10) and emitter.sent == 2
    sidecar.wait_processed(3)
    for t in ("parent.first", "parent.queued", "child.event"):
        assert sidecar.value("agent_events_total", {"type": t, "agent": "", "workflow": "", "severity": "info"}) == 1
