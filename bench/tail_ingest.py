"""Ingest throughput with 100 live-tail clients on the whole stream vs none, beside the ceiling probe.

    python bench/tail_ingest.py [--events 300000] [--clients 100] [--procs 2] [--rounds 2]

A real `agent-sidecar run`; a load generator process streams `--events` pre-encoded
realistic events (~300 bytes, 100 agents) into the Unix socket as fast as it can. With
clients, `--clients` real websockets clients (over `--procs` processes) are subscribed to
everything and read as fast as they can (at nice 19, so they do not take the generator's
core); those that fall behind lose the oldest events, which is the design: ingest must not
wait for them. Rounds alternate none/with so drift on this shared box hits both.

Two clocks, both started when the generator starts writing:
- "ingested": stops when the metrics sink has counted every event (sum of agent_events_total).
  This is all the work when there are no clients, but with clients the hub has only *queued*
  the events by then; sending them is still to come.
- "done": stops when every client has accounted for every event (received, or told in a
  message's `dropped` that it was dropped): the sidecar's whole job, sends included. The
  rate and the CPU per event are taken on this clock.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tail_common import ceiling_limit, cpu_seconds, machine, scrape_value, serve_clients, start_sidecar  # noqa: E402


def lines(n: int) -> list[bytes]:
    rnd = random.Random(3)
    now = time.time()
    template = (
        b'{"type":"%s","timestamp":%.3f,"agent":"agent-%02d","workflow":"code_review","model":"gpt-4o",'
        b'"run_id":"run-%d","trace_id":"%032x","duration_ms":%.1f,"input_tokens":%d,"output_tokens":%d,"cost_usd":0.0123}\n'
    )
    types = [b"llm.call", b"tool.call", b"agent.completed"]
    return [
        template % (rnd.choice(types), now, rnd.randrange(100), i // 40, rnd.getrandbits(128), rnd.random() * 3000,
                    rnd.randrange(50, 4000), rnd.randrange(10, 1500))
        for i in range(n)
    ]


def generator(path: str, n: int, go) -> None:
    data = lines(n)
    chunks = [b"".join(data[i : i + 1000]) for i in range(0, n, 1000)]
    go.wait()
    with contextlib.suppress(PermissionError):
        os.nice(-5)  # ahead of the readers and of other sessions' work: the sidecar is what is measured
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        for c in chunks:
            s.sendall(c)


def clients(url: str, n: int, ready, stop, out, accounted) -> None:
    # Two shared cores: readers at the lowest priority, so they do not starve the load
    # generator and what is measured is the sidecar's ingest, not the box's scheduler.
    os.nice(19)
    counts = {"received": 0, "dropped": 0, "messages": 0}

    def on_message(data: str) -> None:
        received = data.count('"received_at"')
        tail = data.rfind('"dropped":')
        dropped = int(data[tail + 10 : -1])
        counts["received"] += received
        counts["dropped"] += dropped
        counts["messages"] += 1
        with accounted.get_lock():
            accounted.value += received + dropped

    serve_clients(url, [""] * n, on_message, ready, stop)
    out.put((counts["received"], counts["dropped"], counts["messages"]))


def run(n: int, n_clients: int, procs: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp)
        try:
            ready, out = ctx.Queue(), ctx.Queue()
            stop, go = ctx.Event(), ctx.Event()
            accounted = ctx.Value("q", 0)  # events received or told dropped, all clients together
            url = proc.url.replace("http://", "ws://") + "/v1/tail"
            per_proc = n_clients // procs
            readers = [ctx.Process(target=clients, args=(url, per_proc, ready, stop, out, accounted)) for _ in range(procs if n_clients else 0)]
            for r in readers:
                r.start()
            for _ in readers:
                ready.get(timeout=120)
            gen = ctx.Process(target=generator, args=(proc.unix, n, go))
            gen.start()
            time.sleep(2)  # let the generator pre-encode
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            go.set()
            gen.join()
            while scrape_value(proc.url, "agent_events_total") < n:
                time.sleep(0.02)
            ingested = time.perf_counter() - t0
            cpu_ingested = cpu_seconds(proc.pid) - cpu0
            due = n * per_proc * len(readers)
            deadline = time.monotonic() + 600
            while accounted.value < due:  # every queued send done (or dropped and told)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"clients accounted for {accounted.value:,} of {due:,} events after 10 minutes")
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            tail_dropped = scrape_value(proc.url, "sidecar_tail_dropped_total")
            stop.set()
            received = dropped = messages = 0
            for _ in readers:
                r, d, m = out.get(timeout=120)
                received += r
                dropped += d
                messages += m
            for r in readers:
                r.join(30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    assert received + dropped == due and dropped == tail_dropped  # exact accounting, or the clock lied
    return {
        "rate": n / elapsed, "cpu_us": cpu / n * 1e6, "ingested_rate": n / ingested, "cpu_ingested_us": cpu_ingested / n * 1e6,
        "received": received, "dropped": tail_dropped,
        # Per delivered message / event: all the sidecar's CPU (ingest included) over what the clients got.
        "cpu_msg_us": cpu / messages * 1e6 if messages else 0.0, "cpu_delivered_us": cpu / received * 1e6 if received else 0.0,
        "messages": messages,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only-clients", action="store_true", help="skip the runs without clients (profiling)")
    args = ap.parse_args()
    limit = ceiling_limit()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"command: python bench/tail_ingest.py {' '.join(sys.argv[1:])}")
    print(f"ceiling.py limit: {limit:,.0f} events/s; load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| tail clients | events/s (done) | x ceiling | sidecar CPU/event (done) | events/s (ingested only) | CPU/event (ingested only) | deliveries to clients | dropped for slow clients | messages | CPU/message | CPU/delivered event | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rates: dict[int, list[float]] = {0: [], args.clients: []}
    for _ in range(args.rounds):
        for k in ((args.clients,) if args.only_clients else (0, args.clients)):
            r = run(args.events, k, args.procs)
            rates[k].append(r["rate"])
            print(f"| {k} | {r['rate']:,.0f} | {r['rate'] / limit:.2f} | {r['cpu_us']:.1f} µs | {r['ingested_rate']:,.0f} | "
                  f"{r['cpu_ingested_us']:.1f} µs | {r['received']:,} | {r['dropped']:,.0f} | "
                  f"{r['messages']:,} | {r['cpu_msg_us']:.1f} µs | {r['cpu_delivered_us']:.2f} µs | {os.getloadavg()[0]:.2f} |", flush=True)
    if args.only_clients:
        return
    base, loaded = statistics.median(rates[0]), statistics.median(rates[args.clients])
    print(f"median (done clock): {base:,.0f} ev/s without clients, {loaded:,.0f} ev/s with {args.clients}: {loaded / base:.0%} (target >= 75%)")


if __name__ == "__main__":
    main()
