"""`agent-sidecar run`: serve on the embedded default config, a YAML file, and flags."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from sidecar.config import Config, load_config
from sidecar.exceptions import ConfigError, SidecarError
from sidecar.preflight import host_problems, raise_soft_limit
from sidecar.server import configure_logging, loop_factory, serve

log = logging.getLogger("agent_sidecar")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the sidecar", description="Run the sidecar (default config when --config is not given).")
    p.add_argument("--config", metavar="PATH", help="YAML config file")
    p.add_argument("--http", metavar="HOST:PORT", help="override listen.http (port 0 picks a free port); '' disables")
    p.add_argument("--unix", metavar="PATH", help="override listen.unix; '' disables")
    p.set_defaults(func=main)


def build_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    changes = {}
    if args.http is not None:
        changes["listen.http"] = args.http
    if args.unix is not None:
        changes["listen.unix"] = args.unix
    return config.replace(**changes) if changes else config


def tune_collector() -> None:
    """The garbage collector as the sidecar runs with it (the in-process benches call it too)."""
    # Young collections every 50,000 net new container objects instead of 700: the pipeline
    # keeps a stream of small tracked objects (lifecycle entries, per-subject lists), and at the
    # default each event paid ~0.7-2 µs in collections (py-spy: 11-17% of ingest CPU; the
    # collections' own timing in-process: 0.7-2.2 -> 0.35-0.43 µs per event, BENCHMARKS.md issue 17).
    # The older generations keep their default ratios, so cyclic garbage is still reclaimed.
    gc.set_threshold(50_000)
    # What is loaded by now (modules, classes, functions: ~45k objects) lives as long as the process.
    # Frozen, a full garbage collection no longer walks it each time; at 1M samples such a pass,
    # set off by any thread's allocations, held the GIL for ~40 ms of every ~110 (BENCHMARKS.md, issue 18).
    gc.collect()
    gc.freeze()


def main(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"agent-sidecar: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level)
    before, limit = raise_soft_limit()
    if limit != before:
        log.info("file descriptors: soft limit raised from %d to %d (the hard limit)", before, limit)
    else:
        log.info("file descriptors: limit %s", "unlimited" if limit < 0 else limit)
    problems = host_problems(config, limit)
    if problems:
        print("agent-sidecar: cannot run with this configuration here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    # uvicorn handles SIGINT/SIGTERM while serving, then re-raises the signal into the handler
    # that was there before; a no-op one makes a graceful shutdown exit 0, as the contract says.
    # SIGHUP (reload) is the loop's once serving starts; until then it must not end the process.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    tune_collector()
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            started = runner.run(serve(config, reload_from=(lambda: build_config(args)) if args.config else None))
    except SidecarError as exc:
        print(f"agent-sidecar: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # one we did not foresee: still say what it was about
        what = f" ({exc.filename})" if exc.filename else ""
        print(f"agent-sidecar: cannot start{what}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0 if started else 1
