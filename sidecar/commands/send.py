"""`agent-sidecar send`: stream NDJSON from a file or stdin into a running sidecar."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable
from typing import Any, BinaryIO

from sidecar.client.senders import HttpSender, Notify, UnixSender
from sidecar.config import ListenConfig

BATCH_LINES = 1000
CHUNK_BYTES = 64 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="send NDJSON events from a file or stdin", description="Stream NDJSON events (one JSON object per line) to a sidecar.")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--unix", metavar="PATH", help=f"Unix socket (default {ListenConfig.unix})")
    target.add_argument("--url", metavar="URL", help="sidecar base URL, e.g. http://127.0.0.1:8765 (POSTs batches)")
    p.add_argument("--token", help="bearer token for --url")
    p.add_argument("file", nargs="?", help="NDJSON file (default: stdin)")
    p.set_defaults(func=main)


def send_unix(path: str, stream: BinaryIO) -> int:
    """Stream every byte over one connection; returns the number of lines the sidecar read."""
    lines = 0
    with UnixSender(path) as sender:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            lines += chunk.count(b"\n")
            sender.send(chunk)
    return lines


def batches(stream: Iterable[bytes], size: int = BATCH_LINES) -> Iterable[list[bytes]]:
    """Non-blank lines, without their line ends, `size` at a time."""
    batch: list[bytes] = []
    for line in stream:
        if line.strip():
            batch.append(line.rstrip(b"\r\n"))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def send_http(url: str, stream: Iterable[bytes], token: str | None, notify: Notify | None = None) -> dict[str, Any]:
    """POST the lines in batches; returns the totals `accepted`, `rejected` and the first `errors`."""
    totals: dict[str, Any] = {"accepted": 0, "rejected": 0, "errors": []}
    sender = HttpSender(url, token)
    try:
        for batch in batches(stream):
            answer = sender.send(b"\n".join(batch), notify=notify)
            notify = None  # said once per command, not once per batch
            totals["accepted"] += answer.get("accepted", 0)
            totals["rejected"] += answer.get("rejected", 0)
            totals["errors"] += answer.get("errors", [])[: max(0, 5 - len(totals["errors"]))]
    finally:
        sender.close()
    return totals


def _say(message: str) -> None:
    print(f"agent-sidecar send: {message}", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    """Errors (`SidecarError`, `OSError` opening the file) go up to cli.main, which names them."""
    with open(args.file, "rb") if args.file else contextlib.nullcontext(sys.stdin.buffer) as stream:
        if args.url:
            totals = send_http(args.url, stream, args.token, _say)
            for err in totals["errors"]:
                print(f"rejected: {err['error']}", file=sys.stderr)
            print(f"accepted {totals['accepted']}, rejected {totals['rejected']}", file=sys.stderr)
            return 0 if not totals["rejected"] else 1
        path = args.unix or ListenConfig.unix
        lines = send_unix(path, stream)
        print(f"sent {lines} line(s) to unix:{path}", file=sys.stderr)
        return 0

