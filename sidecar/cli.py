"""`agent-sidecar`: parse arguments and hand off to one command module. Nothing else."""

from __future__ import annotations

import argparse
import sys

from sidecar import __version__
from sidecar.commands import check_config, demo, run, send, stats, tail

# Each command module has `register(subparsers)`, which sets `func(args) -> exit code`.
COMMANDS = (run, check_config, send, tail, stats, demo)


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `agent-sidecar tail | head`
        sys.stderr.close()
        return 0
