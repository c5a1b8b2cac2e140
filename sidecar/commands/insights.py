"""`agent-sidecar insights`: findings from a running sidecar (GET /v1/insights), as a table."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from sidecar.commands import DEFAULT_URL
from sidecar.commands.stats import show


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "insights", help="show bottlenecks and optimisation opportunities",
        description="Query GET /v1/insights and print its findings, most severe first (or --json).",
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"sidecar base URL (default {DEFAULT_URL})")
    p.add_argument("--token", help="bearer token (auth.token)")
    p.add_argument("--window", help="the recent period judged, e.g. 15m (default insights.window)")
    p.add_argument("--baseline", help="the period it is compared with, e.g. 1h (default insights.baseline)")
    p.add_argument("--json", action="store_true", help="print the raw JSON document")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS, like top (Ctrl-C stops)")
    p.set_defaults(func=main)


def query_url(args: argparse.Namespace) -> str:
    params = {k: v for k, v in (("window", args.window), ("baseline", args.baseline)) if v is not None}
    query = urllib.parse.urlencode(params)
    base: str = args.url
    return base.rstrip("/") + "/v1/insights" + (f"?{query}" if query else "")


def _subject(subject: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in subject.items()) or "-"


def render(doc: dict[str, Any]) -> str:
    """One row per finding (severity, kind, subject, summary), then each suggestion."""
    head = f"agent-sidecar insights as of {doc['as_of']}: window {doc['window']} against the baseline before it ({doc['baseline']})"
    findings = doc["findings"]
    if not findings:
        checked = sum(doc["checked"].values())
        return f"{head}\nno findings ({checked} subjects checked)\n"
    table = [["severity", "kind", "subject", "summary"]] + [
        [f["severity"], f["kind"], _subject(f["subject"]), f["summary"]] for f in findings
    ]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [head]
    for i, row in enumerate(table):
        lines.append("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[3]]))
        if i == 0:
            lines.append("  ".join("-" * w for w in [*widths, 7]))
    lines.append("")
    lines += [f"{n}. {f['kind']} {_subject(f['subject'])}: {f['suggestion']}" for n, f in enumerate(findings, 1)]
    if not doc.get("exact", True):
        lines.append("note: the insights store hit insights.max_subjects or insights.max_active; some events were not judged")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    return show("insights", query_url(args), args, render)
