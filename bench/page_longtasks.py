"""Responsiveness of the built-in page in headless Chromium while 5,000 ev/s flow into the tail.

    python bench/page_longtasks.py [--rate 5000] [--seconds 20] [--rows 1000]

A real `agent-sidecar run` process; a paced load generator in its own process writes
a realistic event mix to the Unix socket; Debian's Chromium (driven by Playwright)
shows the page on the whole stream. The page records every long task
(PerformanceObserver 'longtask': main-thread work of 50 ms or more), its frames,
its JS heap, and the events it received and was told it missed.
"""

from __future__ import annotations

import argparse
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
        due = int(elapsed * rate) + per_tick
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
                cpu0 = cpu_seconds(proc.pid)
                t0 = time.monotonic()
                if args.screenshot:
                    page.wait_for_timeout(args.seconds * 900)  # near the end: the charts have a history
                    page.screenshot(path=args.screenshot)
                sender.join()
                wall = time.monotonic() - t0
                cpu = cpu_seconds(proc.pid) - cpu0
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


if __name__ == "__main__":
    main()
