"""The floor under a live-tail message on this machine: one write(2) to a loopback TCP socket.

    python bench/tail_write_floor.py [--sockets 1000] [--size 3000] [--rounds 200]

No sidecar, no WebSocket, no event loop: a writer sends one `--size` byte buffer to each of
`--sockets` loopback TCP connections in turn (`socket.send`, non-blocking, TCP_NODELAY as
uvicorn sets it), sleeping 10 ms between rounds, while a reader process drains them all
through one selector. Prints the CPU per send of the writer and per message read of the
reader: on loopback the kernel charges the delivery to the receiving socket and the
reader's wake-up to the sender, so this is what any server pays per message per client,
and what the sidecar's "CPU per delivered message" cannot go below.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import time


def reader(port: int, n: int, size: int, expect: int, ready_w: int) -> None:
    sel = selectors.DefaultSelector()
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
    os.write(ready_w, b"x")
    total = reads = 0
    t0 = time.process_time()
    while total < expect:
        ready = sel.select(2.0)
        if not ready:
            break  # a partial send (full buffer) left the count short: what arrived is enough
        for key, _ in ready:
            try:
                data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            total += len(data)
            reads += 1
    cpu = time.process_time() - t0
    print(f"reader: {cpu / (total / size) * 1e6:.1f} us CPU per message read ({reads:,} recvs for {total // size:,} messages)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    port = srv.getsockname()[1]
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        reader(port, args.sockets, args.size, args.sockets * args.size * args.rounds, ready_w)
        os._exit(0)
    conns = [srv.accept()[0] for _ in range(args.sockets)]
    for c in conns:
        c.setblocking(False)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    os.read(ready_r, 1)
    frame = b"x" * args.size
    sent = 0
    t0 = time.process_time()
    for _ in range(args.rounds):
        for c in conns:
            sent += c.send(frame)
        time.sleep(0.01)
    cpu = time.process_time() - t0
    print(f"writer: {args.sockets * args.rounds:,} sends of {args.size} B to {args.sockets} sockets: "
          f"{cpu / (args.sockets * args.rounds) * 1e6:.1f} us CPU per send; load average {os.getloadavg()[0]:.2f}", flush=True)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
