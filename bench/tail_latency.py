"""Live-tail end-to-end latency: event written to the Unix socket -> received by a WebSocket client.

    python bench/tail_latency.py [--rate 10000] [--clients 1000] [--agents 100] [--whole 10]
                                 [--procs 4] [--seconds 20] [--warmup 5]

A real `agent-sidecar run` process; `--clients` tail clients each filtered to one agent
out of `--agents` (`?agent=agent-NN`), plus `--whole` clients on the whole stream, split
over `--procs` client processes (the real websockets client); a load generator process
writes `--rate` events/s (realistic ~300-byte events, a random agent each) in small
chunks every 2 ms, stamping each event with the wall-clock time it is written
(`sent_at`). Each client records now - sent_at for every event it receives after the
warm-up. Latency includes the client processes' own scheduling on this shared box.

Percentiles are over every delivery that was due, not only those that arrived: the
generator counts the events it wrote after the warm-up per agent, which says how many
each client should have got; a due event that was dropped (queue full) or had not
arrived when the run ended is a miss, ranked as slower than any delivery. A percentile
that falls among the misses is printed as "miss".

Where the time goes: every event carries the sidecar's `received_at` (stamped when its
listener read the event), so the script splits the latency into generator write -> stamp
(the Unix socket and the listener) and stamp -> receive; per message, the age of its newest
event at receive (no waiting behind earlier events in it); and the bytes the kernel holds in
the tail's sockets (sampled with `ss`), as time by Little's law. With `TAIL_PROBE=file` the
sidecar runs under bench/tail_probe.py, which adds the stamp -> the hub's consume and the
stamp -> the write of each message's newest event: inside the sidecar vs after it.
`--raw` swaps the websockets library for a minimal hand-parsing client (cheaper per message).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from array import array

import msgspec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tail_common import (
    cpu_seconds,
    machine,
    rss_mib,
    scrape_value,
    serve_clients,
    serve_raw_clients,
    start_sidecar,
)


class Ev(msgspec.Struct):
    sent_at: float
    received_at: float  # the sidecar's stamp when its listener read the event


class Msg(msgspec.Struct):
    events: list[Ev] = []
    dropped: int = 0


def generator(path: str, rate: int, agents: int, seconds: float, go, done, warm_until) -> None:
    rnd = random.Random(7)
    template = (
        b'{"type":"llm.call","agent":"agent-%02d","workflow":"code_review","model":"gpt-4o","run_id":"run-%d",'
        b'"trace_id":"0af7651916cd43dd8448eb211c80319c","duration_ms":%.1f,"input_tokens":%d,"output_tokens":%d,'
        b'"cost_usd":0.0123,"seq":%d,"sent_at":%.6f}\n'
    )
    go.wait()
    after_warmup = [0] * agents  # events written after the warm-up, by agent: what is due
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        start = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                now = time.time()
                picks = [rnd.randrange(agents) for _ in range(due)]
                s.sendall(b"".join(
                    template % (a, (sent + k) // 40, rnd.random() * 3000, rnd.randrange(50, 4000), rnd.randrange(10, 1500), sent + k, now)
                    for k, a in enumerate(picks)
                ))
                start_at = warm_until.value
                if start_at and now >= start_at:  # the clients' test, on the same stamp
                    for a in picks:
                        after_warmup[a] += 1
                sent += due
            time.sleep(0.002)
    done.put((sent, after_warmup))


def client_proc(url: str, specs: list[str], warm_until, ready, stop, results, nice: int, raw: bool) -> None:
    os.nice(nice)
    decode = msgspec.json.Decoder(Msg).decode
    lat = array("d")
    ingest = array("d")  # of the same deliveries: generator write -> the sidecar's received_at
    newest = array("d")  # per message: receive - the newest event's received_at (no queueing in it)
    counts = {"messages": 0, "events": 0, "dropped": 0, "bytes": 0}

    def on_message(data: str | bytes) -> None:
        now = time.time()
        msg = decode(data)
        counts["messages"] += 1
        counts["dropped"] += msg.dropped
        counts["events"] += len(msg.events)
        counts["bytes"] += len(data)
        start = warm_until.value
        if start and msg.events:
            newest.append(now - max(e.received_at for e in msg.events))
            for e in msg.events:
                if e.sent_at >= start:
                    lat.append(now - e.sent_at)
                    ingest.append(e.received_at - e.sent_at)

    (serve_raw_clients if raw else serve_clients)(url, specs, on_message, ready, stop)
    counts["cpu"] = time.process_time()
    results.put((lat.tobytes(), ingest.tobytes(), newest.tobytes(), counts))


def socket_queues(port: int, stop, out) -> None:
    """Every 0.25 s: bytes the kernel holds for the tail's sockets, sidecar side (Send-Q: written,
    not yet taken by the peer) and client side (Recv-Q: arrived, not yet read by the client
    process). Over the byte rate, by Little's law, that is the mean time a delivery spends there."""
    import subprocess

    send, recv = [], []
    while not stop.wait(0.25):
        out_ss = subprocess.run(["ss", "-tnH", "state", "established"], capture_output=True, text=True, check=False).stdout
        s = r = 0
        for line in out_ss.splitlines():
            f = line.split()
            if len(f) < 4:
                continue
            if f[2].endswith(f":{port}"):
                s += int(f[1])
            elif f[3].endswith(f":{port}"):
                r += int(f[0])
        send.append(s)
        recv.append(r)
    out.put((send, recv))


def percentile(sorted_values: list[float], misses: int, p: float) -> str:
    """The p-th percentile of the deliveries due, misses ranked last (slower than any arrival)."""
    total = len(sorted_values) + misses
    rank = min(total - 1, int(p / 100 * total))
    return f"{sorted_values[rank] * 1000:.1f} ms" if rank < len(sorted_values) else "miss"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--whole", type=int, default=10)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--raw", action="store_true", help="minimal hand-parsing clients instead of the websockets library "
                    "(cheaper per message, so the client processes take less of the box)")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the client processes (on loopback, a woken "
                    "client preempts the sidecar mid-send unless it has lower priority)")
    args = ap.parse_args()

    specs = [f"agent=agent-{i % args.agents:02d}" for i in range(args.clients)] + [""] * args.whole
    random.Random(1).shuffle(specs)
    ctx = multiprocessing.get_context("fork")
    load0 = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp, config=f"tail:\n  max_clients: {len(specs) + 10}\n")
        try:
            url = proc.url.replace("http://", "ws://") + "/v1/tail"
            print(f"sidecar pid {proc.pid}", file=sys.stderr, flush=True)  # for a profiler: py-spy record --pid
            rss_idle = rss_mib(proc.pid)
            warm_until = ctx.Value("d", 0.0)
            ready, results, done = ctx.Queue(), ctx.Queue(), ctx.Queue()
            stop, go = ctx.Event(), ctx.Event()
            clients = [
                ctx.Process(target=client_proc, args=(url, specs[i :: args.procs], warm_until, ready, stop, results, args.nice, args.raw))
                for i in range(args.procs)
            ]
            for c in clients:
                c.start()
            connected = sum(ready.get(timeout=300) for _ in clients)
            assert scrape_value(proc.url, "sidecar_tail_clients") == connected == len(specs)
            rss_connected = rss_mib(proc.pid)
            gen = ctx.Process(target=generator, args=(proc.unix, args.rate, args.agents, args.warmup + args.seconds, go, done, warm_until))
            gen.start()
            run_cpu0 = cpu_seconds(proc.pid)
            go.set()
            time.sleep(args.warmup)
            warm_until.value = time.time()
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            sampling, sampled = ctx.Event(), ctx.Queue()
            sampler = ctx.Process(target=socket_queues, args=(int(proc.url.rsplit(":", 1)[1]), sampling, sampled))
            sampler.start()
            sent, after_warmup = done.get(timeout=args.seconds + 120)
            sampling.set()
            send_q, recv_q = sampled.get(timeout=30)
            sampler.join(10)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - t0)
            time.sleep(2)  # let the last messages arrive
            run_cpu = cpu_seconds(proc.pid) - run_cpu0  # everything the messages counted below cost
            stop.set()
            lat: list[float] = []
            ingest: list[float] = []
            newest: list[float] = []
            totals = {"messages": 0, "events": 0, "dropped": 0, "cpu": 0.0, "bytes": 0}
            for _ in clients:
                raw, raw_ingest, raw_newest, counts = results.get(timeout=120)
                a = array("d")
                a.frombytes(raw)
                lat.extend(a)
                a = array("d")
                a.frombytes(raw_ingest)
                ingest.extend(a)
                a = array("d")
                a.frombytes(raw_newest)
                newest.extend(a)
                for k in totals:
                    totals[k] += counts[k]
            for c in clients:
                c.join(30)
            gen.join(30)
            tail_dropped = scrape_value(proc.url, "sidecar_tail_dropped_total")
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    lat.sort()
    expected = sent * (1 / args.agents * args.clients / len(specs) + args.whole / len(specs)) * len(specs)
    # Due after the warm-up: each filtered client its agent's events, each whole-stream client all.
    due = sum(after_warmup[int(q.rsplit("-", 1)[1])] if q else sum(after_warmup) for q in specs)
    misses = max(0, due - len(lat))
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"command: python bench/tail_latency.py {' '.join(sys.argv[1:])}")
    print(f"clients: {args.clients} filtered to 1 agent of {args.agents} + {args.whole} whole-stream, over {args.procs} processes")
    print(f"events written: {sent:,} at {args.rate:,}/s for {args.warmup:g}+{args.seconds:g} s")
    print(f"deliveries: {totals['events']:,} received (about {expected:,.0f} expected), {totals['dropped']:,} dropped "
          f"(sidecar_tail_dropped_total {tail_dropped:,.0f}), {totals['messages']:,} messages")
    if due:
        print(f"due after warm-up: {due:,} deliveries; arrived {len(lat):,}; missed {misses:,} ({misses / due:.2%}: dropped, or not arrived by the end)")
        print(f"latency over all {due:,} due (misses ranked last): p50 {percentile(lat, misses, 50)}, "
              f"p90 {percentile(lat, misses, 90)}, p99 {percentile(lat, misses, 99)}, p99.9 {percentile(lat, misses, 99.9)}")
    if lat:
        print(f"over the {len(lat):,} that arrived only (what this script used to report): p50 {percentile(lat, 0, 50)}, "
              f"p99 {percentile(lat, 0, 99)}, max {lat[-1] * 1000:.1f} ms, mean {statistics.fmean(lat) * 1000:.1f} ms")
    if ingest:
        ingest.sort()
        print(f"of which generator write -> sidecar's received_at stamp (ingest, pipeline not included): p50 {percentile(ingest, 0, 50)}, "
              f"p90 {percentile(ingest, 0, 90)}, p99 {percentile(ingest, 0, 99)}; so stamp -> client receive is about "
              f"{(statistics.median(lat) - ingest[len(ingest) // 2]) * 1000:.1f} ms at the median")
    if newest:
        newest.sort()
        print(f"per message, receive - its newest event's received_at (the time the freshest event spent after the stamp: "
              f"pipeline, writer pass, kernel, client; not waiting for earlier messages): p50 {percentile(newest, 0, 50)}, "
              f"p90 {percentile(newest, 0, 90)}, p99 {percentile(newest, 0, 99)}")
    if os.environ.get("TAIL_PROBE") and os.path.exists(os.environ["TAIL_PROBE"]):
        probe = array("d")
        with open(os.environ["TAIL_PROBE"], "rb") as f:
            probe.frombytes(f.read())
        probe_sorted = sorted(probe)
        print(f"probe (bench/tail_probe.py), per message written, write - its newest event's received_at (inside the sidecar): "
              f"p50 {percentile(probe_sorted, 0, 50)}, p90 {percentile(probe_sorted, 0, 90)}, p99 {percentile(probe_sorted, 0, 99)} "
              f"over {len(probe):,} writes (warm-up included)")
        probe = array("d")
        with open(os.environ["TAIL_PROBE"] + ".consume", "rb") as f:
            probe.frombytes(f.read())
        probe_sorted = sorted(probe)
        print(f"probe, per batch, the tail hub's consume - the batch's received_at (intake queue, pipeline before the hub): "
              f"p50 {percentile(probe_sorted, 0, 50)}, p90 {percentile(probe_sorted, 0, 90)}, p99 {percentile(probe_sorted, 0, 99)} "
              f"over {len(probe):,} batches")
    if send_q and totals["bytes"]:
        byte_rate = totals["bytes"] / (args.warmup + args.seconds)
        s_mean, r_mean = statistics.fmean(send_q), statistics.fmean(recv_q)
        print(f"kernel socket buffers, mean of {len(send_q)} samples: sidecar Send-Q {s_mean / 1024:,.0f} KiB, client Recv-Q "
              f"{r_mean / 1024:,.0f} KiB (max {max(send_q) / 1024:,.0f} / {max(recv_q) / 1024:,.0f} KiB); at {byte_rate / 2**20:.1f} MiB/s "
              f"delivered that is ~{s_mean / byte_rate * 1000:.1f} ms + ~{r_mean / byte_rate * 1000:.1f} ms per delivery (Little's law)")
    if totals["messages"]:
        print(f"sidecar CPU per delivered message: {run_cpu / totals['messages'] * 1e6:.1f} us; per delivered event: "
              f"{run_cpu / max(1, totals['events']) * 1e6:.2f} us ({run_cpu:.1f} CPU-s from the first event written to 2 s after "
              f"the last, ingest and matching included; {totals['events'] / totals['messages']:.1f} events per message)")
    print(f"sidecar: {cpu * 100:.0f}% of one core while loaded; RSS {rss_idle:.0f} MiB before clients, "
          f"{rss_connected:.0f} MiB with {len(specs)} idle clients connected (+{rss_connected - rss_idle:.0f} MiB), {rss:.0f} MiB at the end")
    print(f"client processes: {totals['cpu']:.1f} CPU-seconds in all (connecting included); load average (1 min) before/after: {load0} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
