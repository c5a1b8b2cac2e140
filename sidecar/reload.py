"""Config reload (SIGHUP, `POST /-/reload`): re-read the config file, validate it whole, then swap.

The file goes through exactly what `check-config` runs (`load_config`, then the host checks of
sidecar/preflight.py); one problem anywhere and nothing changes. A valid file is compared with
the running config key by key: keys declared `live` in sidecar/config.py are swapped in
(sidecar/live.py), the others are reported as needing a restart and keep their running values.
The config that results is validated again, since a live key may now meet a restart-only key
it must agree with (`ingest.max_body_bytes` is live, `ingest.max_event_bytes` is not).

A reload runs on the event loop between batches, so a request or event sees either the old
config or the new one, never a mix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from sidecar.config import Config, config_from_dict, format_duration, format_size, leaves
from sidecar.exceptions import ConfigError
from sidecar.live import LiveConfig
from sidecar.preflight import host_problems, reachable_limit

log = logging.getLogger("agent_sidecar.reload")


@dataclass(frozen=True)
class Change:
    """One key whose value in the file differs from the running one."""

    key: str
    running: Any
    file: Any
    kind: str  # the field's kind in sidecar/config.py, for showing values as a file writes them

    @property
    def secret(self) -> bool:
        """A token: its values never reach an answer or a log line."""
        return self.kind == "token"

    def describe(self) -> str:
        if self.secret:
            return f"{self.key} (changed)"
        return f"{self.key}: {_shown(self.running, self.kind)} -> {_shown(self.file, self.kind)}"

    def as_json(self, before: str, after: str) -> dict[str, Any]:
        """Values as /v1/stats and the config's parser know them: seconds, bytes, plain numbers."""
        if self.secret:
            return {"key": self.key}
        return {"key": self.key, before: _plain(self.running), after: _plain(self.file)}


@dataclass(frozen=True)
class Outcome:
    """What one reload did: the problems that refused it, or what it applied and what it left."""

    problems: list[str]
    applied: list[Change]
    needs_restart: list[Change]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        if self.problems:
            return {"reloaded": False, "problems": self.problems}
        return {
            "reloaded": True,
            "changed": [c.as_json("from", "to") for c in self.applied],
            "needs_restart": [c.as_json("running", "file") for c in self.needs_restart],
        }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _shown(value: Any, kind: str) -> str:
    if kind == "duration":
        return format_duration(value)
    if kind == "durations":
        return "[" + ", ".join(format_duration(v) for v in value) + "]"
    if kind == "size":
        return format_size(value)
    if kind == "mode":
        return f"{value:04o}"
    return json.dumps(_plain(value))


def compare(running: Config, loaded: Config) -> tuple[Config, list[Change], list[Change]]:
    """(the config to run, the live changes it takes from `loaded`, the changes left for a restart)."""
    applied: list[Change] = []
    restart: list[Change] = []
    for (key, old, meta), (_, new, _) in zip(leaves(running), leaves(loaded)):
        if old != new:
            change = Change(key, old, new, meta.get("kind", ""))
            (applied if meta.get("live") else restart).append(change)
    if not applied:
        return running, applied, restart
    return running.replace(**{c.key: c.file for c in applied}), applied, restart


def validate(config: Config) -> list[str]:
    """Every problem of `config` as check-config would list it: the file's rules, then the host's."""
    try:
        config_from_dict(dataclasses.asdict(config))
    except ConfigError as exc:
        return exc.problems
    return host_problems(config, reachable_limit())


class Reloader:
    """Reloads the config `source` returns (the file named by --config, with the command line's
    overrides) into `live`, and reports each attempt in two gauges and one log line."""

    def __init__(
        self,
        live: LiveConfig,
        source: Callable[[], Config] | None,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ):
        self.live = live
        self.source = source
        self.clock = clock
        # Prometheus' own names for the same facts, so the same alerts fit.
        self.successful = Gauge(
            "sidecar_config_last_reload_successful",
            "1 if the last config reload succeeded (or none was tried), 0 if it failed and the previous config is still in force.",
            registry=registry,
        )
        self.success_timestamp = Gauge(
            "sidecar_config_last_reload_success_timestamp_seconds",
            "Unix time the config in force was loaded: at start, or by the last successful reload.",
            registry=registry,
        )
        self.successful.set(1)
        self.success_timestamp.set(clock())

    def reload(self, trigger: str) -> Outcome:
        """Re-read and apply the config; `trigger` (SIGHUP, POST /-/reload) is for the log."""
        outcome = self._attempt()
        if outcome.ok:
            self.successful.set(1)
            self.success_timestamp.set(self.clock())
        else:
            self.successful.set(0)
        _log(trigger, outcome)
        return outcome

    def _attempt(self) -> Outcome:
        if self.source is None:
            return Outcome(["the sidecar was started without --config: there is no file to re-read"], [], [])
        try:
            loaded = self.source()
        except ConfigError as exc:
            return Outcome(exc.problems, [], [])
        problems = validate(loaded)  # what load_config checked already, plus the host
        if problems:
            return Outcome(problems, [], [])
        config, applied, restart = compare(self.live.current, loaded)
        if applied:
            # Only a key left at its running value can make the result differ from the valid file.
            kept = ", ".join(c.key for c in restart)
            problems = [f"{p} (with {kept} kept at the running value until a restart)" for p in validate(config)] if kept else []
            if problems:
                return Outcome(problems, [], [])
            self.live.swap(config)
        return Outcome([], applied, restart)


def _log(trigger: str, outcome: Outcome) -> None:
    if not outcome.ok:
        log.error(
            "config reload (%s) failed, the previous config stays in force: %s",
            trigger, "; ".join(outcome.problems),
        )
        return
    applied = "; ".join(c.describe() for c in outcome.applied) or "nothing changed"
    if outcome.needs_restart:
        log.warning(
            "config reloaded (%s): applied %s; needs a restart, left as running: %s",
            trigger, applied, "; ".join(c.describe() for c in outcome.needs_restart),
        )
    else:
        log.info("config reloaded (%s): applied %s", trigger, applied)
