import signal
import urllib.request

from sidecar.testing import event, ndjson


def test_process_starts_ingests_and_drains_on_sigterm(spawn):
    proc = spawn()
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(proc.unix)
        s.sendall(ndjson(*[event(agent="a", duration_ms=10) for _ in range(100)]))
    assert proc.stop(signal.SIGTERM) == 0
    assert "received=100 accepted=100 rejected=0 dropped=0 processed=100" in proc.output
