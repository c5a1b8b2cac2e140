"""`agent-sidecar send`: stream NDJSON from a file or stdin into a running sidecar."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import BinaryIO

from sidecar.config import ListenConfig

BATCH_LINES = 1000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="send NDJSON events from a file or stdin", description="Stream NDJSON events (one JSON object per line) to a sidecar.")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--unix", metavar="PATH", help=f"Unix socket (default {ListenConfig.unix})")
    target.add_argument("--url", metavar="URL", help="sidecar base URL, e.g. http://127.0.0.1:8765 (POSTs batches)")
    p.add_argument("--token", help="bearer token for --url")
    p.add_argument("file", nargs="?", help="NDJSON file (default: stdin)")
    p.set_defaults(func=main)


def send_unix(path: str, stream: BinaryIO) -> int:
    lines = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        for chunk in iter(lambda: stream.read(64 * 1024), b""):
            lines += chunk.count(b"\n")
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # wait until the sidecar has read everything and closed its end
    print(f"sent {lines} line(s) to unix:{path}", file=sys.stderr)
    return 0


def post_batch(url: str, lines: list[bytes], token: str | None, retries: int = 30) -> dict:
    """POST one NDJSON batch; an overloaded sidecar (503) is retried after its Retry-After."""
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/events", data=b"\n".join(lines), method="POST", headers={"Content-Type": "application/x-ndjson"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for _ in range(retries):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            exc.close()
            if exc.code == 503:
                time.sleep(float(exc.headers.get("Retry-After") or 1))
                continue
            try:
                result = json.loads(body)
            except ValueError:
                result = {}
            if "accepted" in result and exc.code in (400, 413):  # per-item answers: report them
                return result
            raise SystemExit(f"agent-sidecar send: HTTP {exc.code}: {body[:200].decode(errors='replace')}") from None
    raise SystemExit(f"agent-sidecar send: the sidecar stayed overloaded (503) through {retries} retries")


def send_http(url: str, stream: BinaryIO, token: str | None) -> int:
    accepted = rejected = 0
    batch: list[bytes] = []

    def flush() -> None:
        nonlocal accepted, rejected
        result = post_batch(url, batch, token)
        accepted += result.get("accepted", 0)
        rejected += result.get("rejected", 0)
        for err in result.get("errors", [])[:5]:
            print(f"rejected: {err['error']}", file=sys.stderr)
        batch.clear()

    for line in stream:
        if line.strip():
            batch.append(line.rstrip(b"\r\n"))
            if len(batch) >= BATCH_LINES:
                flush()
    if batch:
        flush()
    print(f"accepted {accepted}, rejected {rejected}", file=sys.stderr)
    return 0 if not rejected else 1


def main(args: argparse.Namespace) -> int:
    stream = open(args.file, "rb") if args.file else sys.stdin.buffer
    try:
        if args.url:
            return send_http(args.url, stream, args.token)
        return send_unix(args.unix or ListenConfig.unix, stream)
    except OSError as exc:
        print(f"agent-sidecar send: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.file:
            stream.close()
