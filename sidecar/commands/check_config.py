"""`agent-sidecar check-config PATH`: the exact validation `run` does, every problem listed."""

from __future__ import annotations

import argparse
import sys

from sidecar.config import describe_defaults, load_config
from sidecar.exceptions import ConfigError
from sidecar.preflight import host_problems, reachable_limit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a config file", description="Validate a YAML config; exit 0 if valid, 1 with every problem otherwise.")
    p.add_argument("path", nargs="?", help="YAML config file")
    p.add_argument("--print-defaults", action="store_true", help="print the embedded default config as YAML")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.print_defaults:
        sys.stdout.write(describe_defaults())
        return 0
    if not args.path:
        print("agent-sidecar check-config: a PATH is required", file=sys.stderr)
        return 2
    try:
        config = load_config(args.path)
        problems = host_problems(config, reachable_limit())  # what `run` would refuse here
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        print(f"{args.path}: invalid", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.path}: ok")
    return 0
