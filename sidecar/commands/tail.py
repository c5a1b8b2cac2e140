"""`agent-sidecar tail`: follow live events over `WS /v1/tail`, one readable line each (or NDJSON)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from sidecar.client.senders import os_reason
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tail", help="follow live events", description="Stream live events from a running sidecar (WS /v1/tail).")
    p.add_argument("--url", default=DEFAULT_URL, help=f"sidecar URL, ws:// or http:// (default {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("AGENT_SIDECAR_TOKEN"), help="tail token (default $AGENT_SIDECAR_TOKEN)")
    for key, what in (
        ("type", "event type, glob allowed (llm.*)"),
        ("agent", "agent name, glob allowed"),
        ("workflow", "workflow name"),
        ("model", "model name"),
        ("tool", "tool name"),
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
    for key in ("type", "agent", "workflow", "model", "tool", "run_id"):
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


@dataclass
class Backoff:
    """Waits between reconnect attempts: `first` seconds, doubling up to `cap`; `reset()` once connected."""

    first: float = 0.5
    cap: float = 10.0
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._next = self.first

    def describe(self) -> str:
        return f"retrying in {self.first:g}s, doubling up to every {self.cap:g}s, until Ctrl-C"

    def take(self) -> float:
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


STEADY = 2.0  # a connection that lasted this long earns an immediate reconnect


async def follow(url: str, token: str | None, as_json: bool, out: TextIO, err: TextIO, backoff: Backoff | None = None) -> int:
    """Print events until interrupted. When the sidecar cannot be reached or goes away, say so once
    (with the backoff) and reconnect; an answer that will not change (401, 403, 400) exits 1."""
    backoff = backoff or Backoff()
    colour = not as_json and out.isatty() and "NO_COLOR" not in os.environ
    headers = {"Authorization": f"Bearer {token}"} if token else None
    told = False  # about this outage
    while True:
        began = time.monotonic()
        try:
            async with connect(url, additional_headers=headers, max_size=None, compression=None, open_timeout=10) as ws:
                print(f"connected to {url}", file=err, flush=True)
                told = False
                await _print_messages(ws, as_json, colour, out, err)
            reason = f": {ws.close_reason}" if ws.close_reason else ""
            print(f"disconnected ({ws.close_code}{reason}); reconnecting", file=err, flush=True)
            if time.monotonic() - began >= STEADY:
                backoff.reset()
                continue
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
            if status not in (500, 502, 503, 504):
                print(f"agent-sidecar tail: {url} answered HTTP {status} {body}{_status_hint(status)}", file=err, flush=True)
                return 1
            told = _tell_once(told, err, f"{url} answered HTTP {status} {body}", "the sidecar is in trouble", backoff)
        except InvalidURI as exc:
            print(f"agent-sidecar tail: {exc} (set --url to http://HOST:PORT or ws://HOST:PORT)", file=err, flush=True)
            return 1
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            why = os_reason(exc) if isinstance(exc, OSError) else ("timed out" if isinstance(exc, TimeoutError) else str(exc))
            told = _tell_once(told, err, f"cannot connect to {url}: {why}", "is `agent-sidecar run` running there? set --url", backoff)
        await asyncio.sleep(backoff.take())


def _tell_once(told: bool, err: TextIO, problem: str, hint: str, backoff: Backoff) -> bool:
    if not told:
        print(f"agent-sidecar tail: {problem} ({hint}); {backoff.describe()}", file=err, flush=True)
    return True


def _status_hint(status: int) -> str:
    if status == 401:
        return " (pass --token or set $AGENT_SIDECAR_TOKEN: tail.token, else auth.token)"
    if status == 403:
        return " (this origin is not in tail.allowed_origins)"
    if status == 404:
        return " (is --url the sidecar's base URL?)"
    return ""


async def _print_messages(ws: ClientConnection, as_json: bool, colour: bool, out: TextIO, err: TextIO) -> None:
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


def main(args: argparse.Namespace) -> int:
    url = tail_url(args.url, args)
    # It runs "until Ctrl-C": also when started with SIGINT ignored (a shell's background job
    # inherits that), which would leave asyncio no KeyboardInterrupt to stop it with.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return asyncio.run(follow(url, args.token, args.json, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return 130
