"""Responsiveness of the built-in page in headless Chromium while 5,000 ev/s flow into the tail.

    python bench/page_longtasks.py [--rate 5000] [--seconds 20] [--rows 1000] [--screenshot docs/page.png]
    python bench/page_longtasks.py --rate 0    # the same page with no events: this machine's noise floor

A real `agent-sidecar run` process; a paced load generator in its own process writes
a realistic event mix to the Unix socket; Debian's Chromium (driven by Playwright)
shows the page on the whole stream. The page records every long task
(PerformanceObserver 'longtask': main-thread work of 50 ms or more), its frames,
its JS heap, and the events it received and was told it missed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ceiling_limit, cpu_seconds, machine, realistic_lines, start_sidecar  # noqa: E402

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

OBSERVE = """
window.__bench = {longtasks: [], frames: 0};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__bench.longtasks.push(e.duration);
}).observe({type: "longtask", buffered: true});
const tick = () => { window.__bench.frames++; requestAnimationFrame(tick); };
requestAnimationFrame(tick);
"""

READ = """() => ({
  longtasks: window.__bench.longtasks.slice(),
  frames: window.__bench.frames,
  heap: performance.memory ? performance.memory.usedJSHeapSize : null,
  received: +document.querySelector('#received').dataset.count,
  dropped: +document.querySelector('#dropped').dataset.count,
  rows: +document.querySelector('#events').dataset.rows,
  domRows: document.querySelectorAll('#events > li').length,
  nodes: document.getElementsByTagName('*').length,
})"""


def main_thread_tasks(trace_path: str) -> list[tuple[float, float]]:
    """(wall ms, CPU ms) of every task on the page's main thread, from a Chromium trace.

    A long task is measured in wall time; on a machine shared with other busy
    processes the thread may be descheduled mid-task, so its own CPU time tells
    how much of that is the page's work."""
    with open(trace_path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    main = {(e["pid"], e["tid"]) for e in events if e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"}
    return [
        (e["dur"] / 1000, e.get("tdur", 0) / 1000)
        for e in events
        if e.get("ph") == "X" and e.get("name") == "ThreadControllerImpl::RunTask" and (e["pid"], e.get("tid")) in main
    ]


def paced_sender(path: str, rate: int, seconds: float, ready, sent) -> None:
    """Write `rate` events/s for `seconds`, in 10 ms slices, on one connection."""
    lines = realistic_lines(20_000)
    per_tick = max(1, rate // 100)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    ready.set()
    start = time.monotonic()
    n = 0
    i = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) + per_tick if rate > 0 else 0  # --rate 0: the idle page, for a baseline
        if n < due:
            k = due - n
            chunk = [lines[(i + j) % len(lines)] for j in range(k)]
            sock.sendall(b"".join(chunk))
            n += k
            i += k
        time.sleep(0.01)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    sock.close()
    sent.value = n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rows", type=int, default=1000, help="web.max_rows")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshot", default="", help="save a screenshot under load to this path")
    ap.add_argument("--trace", action="store_true", help="also record a Chromium trace: CPU time of the long tasks")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    limit = ceiling_limit()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_sidecar(tmp, config=f"web:\n  max_rows: {args.rows}\n")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.add_init_script(OBSERVE)
                page.goto(proc.url + "/")
                page.wait_for_selector('#conn[data-state="connected"]')
                page.wait_for_timeout(1000)
                before = page.evaluate(READ)
                ctx = multiprocessing.get_context("spawn")
                ready, sent = ctx.Event(), ctx.Value("q", 0)
                sender = ctx.Process(target=paced_sender, args=(proc.unix, args.rate, args.seconds, ready, sent))
                sender.start()
                ready.wait(10)
                trace_path = os.path.join(tmp, "trace.json")
                if args.trace:
                    browser.start_tracing(page=page, path=trace_path, categories=["toplevel", "devtools.timeline"])
                cpu0 = cpu_seconds(proc.pid)
                t0 = time.monotonic()
                if args.screenshot:
                    page.wait_for_timeout(args.seconds * 900)  # near the end: the charts have a history
                    page.screenshot(path=args.screenshot)
                sender.join()
                wall = time.monotonic() - t0
                cpu = cpu_seconds(proc.pid) - cpu0
                if args.trace:
                    browser.stop_tracing()
                    traced = main_thread_tasks(trace_path)
                page.wait_for_function(
                    f"() => +document.querySelector('#received').dataset.count + +document.querySelector('#dropped').dataset.count >= {sent.value}",
                    timeout=30_000,
                )
                after = page.evaluate(READ)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(20)

    tasks = after["longtasks"][len(before["longtasks"]):]
    n = sent.value
    print(f"machine: {machine()}")
    print(f"ceiling.py limit: {limit:,.0f} events/s (offered load = {args.rate / limit:.3f} x limit)")
    print(f"load: {n:,} events in {wall:.1f} s = {n / wall:,.0f} ev/s offered into the tail (1 page on the whole stream)")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"sidecar CPU: {cpu / wall * 100:.0f}% of one core")
    print(f"page received {after['received'] - before['received']:,}, told it missed {after['dropped'] - before['dropped']:,}")
    print(f"list: {after['rows']} events kept (web.max_rows {args.rows}), {after['domRows']} rows in the DOM, {after['nodes']:,} DOM nodes")
    print(f"frames: {(after['frames'] - before['frames']) / wall:.0f} per second")
    if before["heap"] and after["heap"]:
        print(f"JS heap: {before['heap'] / 2**20:.1f} MiB before, {after['heap'] / 2**20:.1f} MiB after")
    if tasks:
        tasks.sort()
        print(
            f"long tasks (>= 50 ms): {len(tasks)}, max {tasks[-1]:.0f} ms, "
            f"median {tasks[len(tasks) // 2]:.0f} ms, over 100 ms: {sum(t > 100 for t in tasks)}, "
            f"total {sum(tasks) / 1000:.2f} s of {wall:.1f} s"
        )
    else:
        print("long tasks (>= 50 ms): 0")
    if args.trace:
        long_ones = sorted(cpu for wall_ms, cpu in traced if wall_ms >= 50)
        all_cpu = sorted(cpu for _, cpu in traced)
        print(
            f"trace: {len(traced):,} main-thread tasks, {len(long_ones)} of them >= 50 ms wall; "
            f"their own CPU time: max {max(long_ones, default=0):.0f} ms, median {long_ones[len(long_ones) // 2] if long_ones else 0:.0f} ms; "
            f"max CPU of any task {all_cpu[-1] if all_cpu else 0:.0f} ms, tasks over 50 ms CPU: {sum(c >= 50 for c in all_cpu)}"
        )


if __name__ == "__main__":
    main()
