"""`agent-sidecar`: parse arguments and hand off to one command module; map errors to exit codes.

Commands and library code raise; only here does an error become a message and an exit code.
"""

from __future__ import annotations

import argparse
import sys

from sidecar import __version__
from sidecar.client.senders import ClientError, Refused, Unreachable, os_reason
from sidecar.commands import check_config, demo, insights, run, send, stats, tail

# Each command module has `register(subparsers)`, which sets `func(args) -> exit code`.
COMMANDS = (run, check_config, send, tail, stats, insights, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-sidecar",
        description="Metrics sidecar for AI-agent systems: JSON events in; Prometheus metrics, exact windows and a live tail out.",
    )
    parser.add_argument("--version", action="version", version=f"agent-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    return parser


def explain(exc: ClientError) -> str:
    """The error's message with the flag that would fix it."""
    flag = "--url URL" if "://" in exc.target else "--unix PATH"
    if isinstance(exc, Unreachable):
        exc.add_hint(f"set {flag}")
    elif isinstance(exc, Refused) and exc.status == 401:
        exc.add_hint("pass --token")
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `agent-sidecar tail | head`
        sys.stderr.close()
        return 0
    except ClientError as exc:
        print(f"agent-sidecar {args.command}: {explain(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file the user named (send FILE)
        if exc.filename is None:
            print(f"agent-sidecar {args.command}: {exc}", file=sys.stderr)
        else:
            print(f"agent-sidecar {args.command}: cannot open {exc.filename}: {os_reason(exc)} (check the path)", file=sys.stderr)
        return 1
