"""Read the committed Grafana dashboards the way Grafana does: panels, targets, variables.

Shared by the structural dashboard tests and the end-to-end Prometheus test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "grafana" / "dashboards"
PROMETHEUS = REPO / "prometheus"

# `$name`, `${name}` and `${name:format}`; Grafana's own start with `__`.
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms", "__all"}

def load_dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel}/{self.ref}"


def queries(dashboards: dict[str, dict]) -> list[Query]:
    out = []
    for name, dash in dashboards.items():
        for panel in panels(dash):
            for t in panel.get("targets", []):
                out.append(Query(name.removesuffix(".json"), panel["title"], t["refId"], t["expr"], t.get("instant", False)))
    return out


def variables_used(text: str) -> set[str]:
    return {a or b for a, b in VARIABLE.findall(text)}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace every $var / ${var} with its value (KeyError if one is unknown)."""
    return VARIABLE.sub(lambda m: values[m[1] or m[2]], expr)


LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\)\Z")


def parse_label_values(query: str) -> tuple[str, str]:
    """`label_values(selector, label)` -> (selector, label)."""
    m = LABEL_VALUES.match(query)
    if not m:
        raise ValueError(f"not a label_values() query: {query}")
    return m[1], m[2]
