"""`agent-sidecar stats`: exact rolling-window statistics from a running sidecar (GET /v1/stats)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from sidecar.client.senders import os_reason
from sidecar.commands import DEFAULT_URL

CLEAR = "\x1b[H\x1b[2J"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stats", help="show exact rolling-window statistics", description="Query GET /v1/stats and print a table (or --json)."
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"sidecar base URL (default {DEFAULT_URL})")
    p.add_argument("--token", help="bearer token (auth.token)")
    p.add_argument("--window", help="one window, e.g. 5m (default: every window and since start)")
    p.add_argument("--by", choices=("agent", "workflow", "type", "model", "tool"), help="one row per value of this field")
    for dim in ("agent", "workflow", "type", "model", "tool"):
        p.add_argument(f"--{dim}", dest=f"filter_{dim}", metavar=dim.upper(), help=f"only events with this {dim}")
    p.add_argument("--limit", type=int, help="at most this many --by rows (server default 50)")
    p.add_argument("--json", action="store_true", help="print the raw JSON document")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS, like top (Ctrl-C stops)")
    p.set_defaults(func=main)


def query_url(args: argparse.Namespace) -> str:
    params = {"window": args.window, "by": args.by, "limit": args.limit}
    for dim in ("agent", "workflow", "type", "model", "tool"):
        params[dim] = getattr(args, f"filter_{dim}")
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    base: str = args.url
    return base.rstrip("/") + "/v1/stats" + (f"?{query}" if query else "")


class StatsError(Exception):
    """The sidecar answered with an error, or could not be reached."""


def fetch(url: str, token: str | None) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            doc: dict[str, Any] = json.load(response)
            return doc
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = body[:200].decode(errors="replace")
        hint = " (pass --token)" if exc.code == 401 else ""
        raise StatsError(f"{url} answered HTTP {exc.code}: {message}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        why = os_reason(reason) if isinstance(reason, OSError) else str(reason)
        raise StatsError(f"cannot reach {url}: {why} (is `agent-sidecar run` running there? set --url URL)") from None


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("events", lambda d: _num(d["events"])),
    ("err%", lambda d: "-" if d["error_rate"] is None else f"{100 * d['error_rate']:.1f}"),
    ("ev/s", lambda d: _num(d["rates"]["events_per_second"], 2)),
    ("p50 ms", lambda d: _num(d["duration_ms"]["p50"])),
    ("p90 ms", lambda d: _num(d["duration_ms"]["p90"])),
    ("p95 ms", lambda d: _num(d["duration_ms"]["p95"])),
    ("p99 ms", lambda d: _num(d["duration_ms"]["p99"])),
    ("max ms", lambda d: _num(d["duration_ms"]["max"])),
    ("tokens", lambda d: _num(d["tokens"]["total"])),
    ("cost $", lambda d: _num(d["cost_usd"], 4)),
    ("agents", lambda d: _num(d["agents_active"])),
    # runs_seen: distinct run ids in the window (sidecars before it was renamed send workflows_active)
    ("runs", lambda d: _num(d.get("runs_seen", d.get("workflows_active")))),
)


def render(doc: dict[str, Any]) -> str:
    """A fixed-width table: one row per window (or per --by group), exactness marked."""
    rows: list[tuple[str, dict[str, Any]]] = []
    if "windows" in doc:
        rows = [(name, w) for name, w in doc["windows"].items()] + [("since start", doc["cumulative"])]
        docs = [doc["cumulative"], *doc["windows"].values()]
    else:
        rows = [(f"{doc['window']} (all)", doc)] + [
            (str(g["key"]) if g["key"] is not None else "(none)", g) for g in doc.get("groups", [])
        ]
        docs = [doc]
    first = doc.get("by", "window")
    table = [[first, *(c for c, _ in COLUMNS)]] + [[label, *(fmt(d) for _, fmt in COLUMNS)] for label, d in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [f"agent-sidecar stats as of {doc['as_of']}"]
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    inexact = [d for d in docs if not d.get("exact", True)]
    if inexact:
        lines.append(f"note: quantiles from a uniform sample in {len(inexact)} row(s) (windows.max_samples reached)")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    return show("stats", query_url(args), args, render)


def show(command: str, url: str, args: argparse.Namespace, render: Callable[[dict[str, Any]], str]) -> int:
    """Fetch and print once (a table, or --json), or every --watch seconds; shared with `insights`."""
    while True:
        try:
            doc = fetch(url, args.token)
        except StatsError as exc:
            print(f"agent-sidecar {command}: {exc}", file=sys.stderr)
            return 1
        out = json.dumps(doc, indent=2) + "\n" if args.json else render(doc)
        if args.watch:
            out = CLEAR + out
        sys.stdout.write(out)
        sys.stdout.flush()
        if not args.watch:
            return 0
        time.sleep(args.watch)
