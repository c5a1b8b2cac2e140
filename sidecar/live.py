"""The config in force, in one place that a reload swaps.

Consumers read `current` when they use a value (a route per request, a sink per batch or
sweep) instead of keeping the value they were built with, so a reload is one assignment
here, seen by the next request or event. Parts that keep a value of their own (a sink's
series cap, the HTTP guard's timeouts, the log level) register an `on_change` hook that
copies the new value over. Which keys may change at all is declared once, in sidecar/config.py
(`live=True`); sidecar/reload.py keeps every other key at its running value.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar.config import Config


class LiveConfig:
    """The running sidecar's config; `swap` replaces it whole and runs the hooks in order."""

    def __init__(self, config: Config) -> None:
        self.current = config
        self._hooks: list[Callable[[Config], None]] = []

    def token(self) -> str | None:
        """The bearer token data routes require now (auth.token)."""
        return self.current.auth.token

    def tail_token(self) -> str | None:
        """The token /v1/tail requires now: tail.token, else auth.token."""
        return self.current.tail.token or self.current.auth.token

    def on_change(self, hook: Callable[[Config], None]) -> None:
        """Call `hook(config)` with every config swapped in from now on."""
        self._hooks.append(hook)

    def swap(self, config: Config) -> None:
        self.current = config
        for hook in self._hooks:
            hook(config)
