"""Checks of a valid config against this host, shared by `run` (which refuses to start) and
`check-config` (which lists them with the config's own problems).

File descriptors: every open connection holds one, so the connection caps must fit the limit.
When they did not, the process ran out of descriptors under load (idle HTTP connections were
enough), and a Unix client that then connected lost its events without a counter. `run` raises
the soft limit to the hard one first; the budget is checked against what it gets.
"""

from __future__ import annotations

import os
import resource

from sidecar.config import Config

# Descriptors the sidecar needs besides client connections: listening sockets, the event
# loop, log files, /proc reads of the process collector, lingering refused connections.
RESERVED_FDS = 128


def raise_soft_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard one where allowed; (before, now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:  # RLIM_INFINITY is -1: never "raise" it to a number
        return soft, soft
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def reachable_limit() -> int:
    """The soft limit `run` would end up with (the hard limit, which it raises the soft one to)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return soft if soft == resource.RLIM_INFINITY else max(soft, 1 << 20)
    return max(soft, hard)


def needed(config: Config) -> int:
    """Descriptors the configured caps can hold at once, plus the reserve."""
    n = RESERVED_FDS
    if config.listen.unix:
        n += config.ingest.max_connections
    if config.listen.http:
        n += config.ingest.max_http_connections
    return n


def budget_problems(config: Config, limit: int) -> list[str]:
    """A problem line when the caps (plus RESERVED_FDS) do not fit in `limit` descriptors."""
    if limit == resource.RLIM_INFINITY or needed(config) <= limit:
        return []
    keys = []
    if config.listen.unix:
        keys.append(f"ingest.max_connections ({config.ingest.max_connections})")
    if config.listen.http:
        keys.append(f"ingest.max_http_connections ({config.ingest.max_http_connections})")
    return [
        f"ingest: {' + '.join(keys)} + {RESERVED_FDS} reserved = {needed(config)} file descriptors, "
        f"more than the limit of {limit} (`ulimit -n`): lower the caps or raise the limit"
    ]


def host_problems(config: Config, fd_limit: int) -> list[str]:
    """Every way `config` cannot work on this host, each with its YAML path and what to do."""
    problems = budget_problems(config, fd_limit)
    if config.listen.unix:
        directory = os.path.dirname(config.listen.unix)
        if not os.path.isdir(directory):
            problems.append(f"listen.unix: directory {directory} does not exist; create it or choose a path in an existing directory")
    if config.windows.snapshot_path:
        # Written every snapshot_every: a directory that is not writable would only show at the first save.
        directory = os.path.dirname(config.windows.snapshot_path)
        if not os.path.isdir(directory):
            problems.append(f"windows.snapshot_path: directory {directory} does not exist; create it (on a persistent volume) or choose another path")
        elif not os.access(directory, os.W_OK | os.X_OK):
            problems.append(f"windows.snapshot_path: no permission to create files in {directory}; run as a user who may, or choose another path")
    return problems
