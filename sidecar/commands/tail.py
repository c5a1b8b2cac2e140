"""`agent-sidecar tail`: follow live events over `WS /v1/tail`, one readable line each (or NDJSON)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sidecar.commands import DEFAULT_URL


class _Message(msgspec.Struct):
    events: list[msgspec.Raw] = []
    dropped: int = 0
    op: str | None = None
    error: str | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
_decode_event = msgspec.json.Decoder(dict).decode

_COLOURS = {"debug": "\033[2m", "info": "", "warning": "\033[33m", "error": "\033[31m", "critical": "\033[1;31m"}
_RESET = "\033[0m"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tail", help="follow live events", description="Stream live events from a running sidecar (WS /v1/tail).")
    p.add_argument("--url", default=DEFAULT_URL, help=f"sidecar URL, ws:// or http:// (default {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("AGENT_SIDECAR_TOKEN"), help="tail token (default $AGENT_SIDECAR_TOKEN)")
    for key, what in (
        ("type", "event type, glob allowed (llm.*)"),
        ("agent", "agent name, glob allowed"),
        ("workflow", "workflow name"),
        ("model", "model name"),
        ("run-id", "workflow run id"),
    ):
        p.add_argument(f"--{key}", action="append", metavar="VALUE", help=f"{what}; repeat to OR")
    p.add_argument("--severity", help="minimum severity: debug, info, warning, error or critical")
    p.add_argument("--json", action="store_true", help="raw NDJSON, one event per line (pipe-friendly)")
    p.set_defaults(func=main)


def tail_url(base: str, args: argparse.Namespace) -> str:
    """ws://host:port/v1/tail?filters from --url (ws, wss, http or https; path optional)."""
    parts = urlsplit(base if "://" in base else f"ws://{base}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/tail"):
        path += "/v1/tail"
    query = []
    for key in ("type", "agent", "workflow", "model", "run_id"):
        query += [(key, v) for v in getattr(args, key) or ()]
    if args.severity:
        query.append(("severity", args.severity))
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def format_event(raw: bytes, colour: bool) -> str:
    """time severity type agent workflow duration tokens cost, for a terminal."""
    ev: dict[str, Any] = _decode_event(raw)
    when = _local_time(ev.get("timestamp")) or _local_time(ev.get("received_at")) or "-"
    severity = str(ev.get("severity") or ("error" if str(ev.get("type", "")).endswith(".failed") else "info"))
    fields = [when, f"{severity:<8}", f"{ev.get('type', '?'):<20}", str(ev.get("agent") or "-"), str(ev.get("workflow") or "-")]
    if isinstance(ev.get("duration_ms"), (int, float)):
        fields.append(f"{ev['duration_ms']:.0f}ms")
    tokens = [f"{k[0]}={ev[k]}" for k in ("input_tokens", "output_tokens") if ev.get(k) is not None]
    if ev.get("tokens") is not None:
        tokens.append(f"tokens={ev['tokens']}")
    if tokens:
        fields.append(" ".join(tokens))
    if isinstance(ev.get("cost_usd"), (int, float)):
        fields.append(f"${ev['cost_usd']:.4f}")
    if ev.get("error"):
        fields.append(f"error={ev['error']}")
    line = " ".join(fields)
    code = _COLOURS.get(severity, "")
    return f"{code}{line}{_RESET}" if colour and code else line


def _local_time(ts: Any) -> str | None:
    """HH:MM:SS.mmm local time of an epoch number or an RFC 3339 string; None if neither."""
    try:
        if isinstance(ts, str):
            moment = datetime.fromisoformat(ts).astimezone()
        elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
            moment = datetime.fromtimestamp(ts)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    return moment.strftime("%H:%M:%S.%f")[:-3]


async def follow(url: str, token: str | None, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Print events until interrupted; reconnect with backoff when the sidecar goes away."""
    colour = not as_json and out.isatty() and "NO_COLOR" not in os.environ
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async for ws in connect(url, additional_headers=headers, max_size=None, compression=None):
            print(f"connected to {url}", file=err, flush=True)
            try:
                async for data in ws:
                    msg = _decode_message(data)
                    if msg.op == "error":
                        print(f"sidecar: {msg.error}", file=err, flush=True)
                    if msg.dropped:
                        print(f"... {msg.dropped} event(s) dropped: this client fell behind", file=err, flush=True)
                    if msg.events:
                        if as_json:
                            out.write("".join(bytes(raw).decode() + "\n" for raw in msg.events))
                        else:
                            out.write("".join(format_event(raw, colour) + "\n" for raw in msg.events))
                        out.flush()
            except ConnectionClosed:
                pass
            code = ws.close_code
            print(f"disconnected ({code}); reconnecting", file=err, flush=True)
    except InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
        print(f"agent-sidecar tail: HTTP {exc.response.status_code} {body}", file=err)
        return 1
    return 0  # pragma: no cover - the loop above only ends by an exception


def main(args: argparse.Namespace) -> int:
    url = tail_url(args.url, args)
    try:
        return asyncio.run(follow(url, args.token, args.json, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return 130
