import os
import socket
import stat
import threading

import pytest

from sidecar.exceptions import SocketInUseError
from sidecar.ingest.unix import BACKLOG, claim_socket_path
from sidecar.testing import FakeClock, event, ndjson, running_sidecar, wait_until


def counts(s, transport="unix"):
    v = lambda name, **l: s.value(name, {"transport": transport, **l}) or 0  # noqa: E731
    return v("sidecar_events_received_total"), v("sidecar_events_accepted_total")


def rejected(s, reason, transport="unix"):
    return s.value("sidecar_events_rejected_total", {"transport": transport, "reason": reason}) or 0


def test_socket_is_created_with_mode_0660(sidecar):
    assert stat.S_IMODE(os.stat(sidecar.unix).st_mode) == 0o660


def test_socket_mode_is_configurable():
    with running_sidecar(**{"listen.unix_mode": 0o600}) as s:
        assert stat.S_IMODE(os.stat(s.unix).st_mode) == 0o600


def test_interleaved_good_and_bad_lines_lose_no_good_event(sidecar):
    data = b"".join(
        [
            ndjson(event(agent="a")),
            b"{not json\n",
            ndjson(event(agent="a")),
            b'{"agent": "no type"}\n',
            b"x" * 70_000 + b"\n",  # over ingest.max_event_bytes
            ndjson(event(agent="a")),
            b'{"type": "llm.call", "duration_ms": -1}\n',
            b"\n\n",
            b'{"type": "llm.call", "agent": "a"}',  # no final newline: still an event
        ]
    )
    sidecar.send_unix(data)
    sidecar.wait_processed(4)
    assert sidecar.value("agent_events_total", {"type": "llm.call", "agent": "a", "workflow": "", "severity": "info"}) == 4
    assert counts(sidecar) == (8, 4)
    assert [rejected(sidecar, r) for r in ("invalid_json", "missing_type", "too_large", "invalid_field")] == [1, 1, 1, 1]


def test_many_concurrent_clients_are_all_counted(sidecar):
    per_client, clients = 500, 40

    def client(i):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(sidecar.unix)
            for _ in range(per_client // 50):
                sock.sendall(ndjson(*[event(agent=f"agent-{i % 4}") for _ in range(50)]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sidecar.wait_processed(per_client * clients)
    total = sum(sidecar.value("agent_events_total", {"type": "llm.call", "agent": f"agent-{i}", "workflow": "", "severity": "info"}) for i in range(4))
    assert total == per_client * clients
    assert counts(sidecar) == (per_client * clients, per_client * clients)


def test_a_client_that_sends_nothing_or_stops_mid_line_does_not_stall_others(sidecar):
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(sidecar.unix)
    half = socket.socket(socket.AF_UNIX)
    half.connect(sidecar.unix)
    half.sendall(b'{"type": "llm.ca')
    sidecar.send_unix(ndjson(event(agent="ok")))
    sidecar.wait_processed(1)
    half.close()  # disconnect mid-line: the fragment is rejected, not lost silently
    idle.close()
    for _ in range(200):
        if rejected(sidecar, "invalid_json") == 1:
            break
        threading.Event().wait(0.01)
    assert rejected(sidecar, "invalid_json") == 1
    assert counts(sidecar) == (2, 1)


def test_beyond_max_connections_a_new_client_waits_in_the_backlog_counted_and_loses_nothing():
    with running_sidecar(**{"ingest.max_connections": 2}) as s:
        held = [socket.socket(socket.AF_UNIX) for _ in range(2)]
        for sock in held:
            sock.connect(s.unix)
            sock.sendall(ndjson(event()))
        s.wait_processed(2)
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(s.unix)  # queued by the kernel, not accepted
        extra.sendall(ndjson(event(agent="waited")))
        wait_until(lambda: s.value("sidecar_unix_connections_refused_total") == 1, "the wait counted")
        assert s.value("sidecar_unix_connections") == 2 and s.sidecar.pipeline.processed == 2
        held[0].close()  # a slot frees: the waiting client is accepted and read
        s.wait_processed(3)
        extra.close()
        held[1].close()


def test_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # bound, never listening, then closed: what a killed process leaves
    dead.close()
    assert os.path.exists(path)
    claim_socket_path(path)
    assert not os.path.exists(path)


def test_live_socket_is_not_stolen(tmp_path):
    path = str(tmp_path / "live.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    try:
        with pytest.raises(SocketInUseError, match="another process is listening"):
            claim_socket_path(path)
    finally:
        live.close()


def test_a_regular_file_at_the_socket_path_is_not_deleted(tmp_path):
    path = tmp_path / "file.sock"
    path.write_text("precious")
    with pytest.raises(SocketInUseError, match="not a socket"):
        claim_socket_path(str(path))
    assert path.read_text() == "precious"


def test_with_every_slot_and_the_backlog_full_a_new_client_is_refused_before_it_writes():
    clock = FakeClock()  # frozen: the client holding the slot never becomes evictable
    with running_sidecar(clock=clock, **{"ingest.max_connections": 1}) as s:
        holder = socket.socket(socket.AF_UNIX)
        holder.connect(s.unix)
        holder.sendall(ndjson(event()))
        s.wait_processed(1)
        waiting = []
        try:
            with pytest.raises(BlockingIOError):  # EAGAIN from connect(): nothing was written
                for _ in range(BACKLOG + 10):
                    sock = socket.socket(socket.AF_UNIX)
                    waiting.append(sock)
                    sock.setblocking(False)
                    sock.connect(s.unix)
            assert len(waiting) > BACKLOG // 2  # the backlog held those before it
        finally:
            for sock in (*waiting, holder):
                sock.close()


def test_batches_from_the_listeners_arrive_numbered_by_the_decoder(sidecar):
    """The decoder numbers each event's label set as it decodes it, with the sinks' own numbering
    (build_app hands one LabelSets to both): no sink numbers a batch from a listener again."""
    import httpx

    sinks = sidecar.sidecar.sinks
    label_sets = sinks.metrics.label_sets
    assert sidecar.sidecar.decoder.label_sets is label_sets is sinks.window.label_sets is sinks.insights.label_sets
    numbered_again = []
    number = label_sets.number
    label_sets.number = lambda events: numbered_again.append(len(events)) or number(events)
    lines = [ndjson(event(agent=f"a{i % 3}", success=i % 4 != 0, tool="grep" if i % 5 == 0 else None)) for i in range(40)]
    sidecar.send_unix(b"".join(lines) + b"{not json\n" + b"".join(lines[:5]))  # one rejected line: line by line
    r = httpx.post(sidecar.url + "/v1/events", content=b"".join(lines), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202
    sidecar.wait_processed(85)
    assert numbered_again == []
    failed = {"agent": "a0", "workflow": "", "error": ""}
    assert sidecar.value("agent_errors_total", failed) == 2 * 4 + 1  # i = 0, 12, 24, 36 twice; 0 again in the five
    assert sidecar.value("agent_tool_calls_total", {"agent": "a0", "tool": "grep", "outcome": "failed"}) == 2 + 1  # i = 0
    assert sidecar.value("agent_tool_calls_total", {"agent": "a0", "tool": "grep", "outcome": "completed"}) == 2 * 2  # i = 15, 30
