"""The real stack, end to end: `agent-sidecar run` + `agent-sidecar demo` + the real Prometheus
(Debian's /usr/bin/prometheus, exemplar storage on, 1s scrape and rule evaluation) loading
prometheus/rules. Every panel query of every dashboard, with its variables resolved the way Grafana
resolves them, must return data through Prometheus' HTTP API. A panel with "No data" is a defect.

And the real Prometheus as the judge of the exposition (`promtool check metrics` refuses any
OpenMetrics text with exemplars): no accepted event, however hostile, may make a scrape fail.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import yaml

import fuzzing
from grafana_queries import PROMETHEUS, REPO, Query, load_dashboards, parse_label_values, queries, substitute
from sidecar.testing import SidecarProcess

PROMETHEUS_BIN = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS_BIN is None, reason="prometheus not installed (apt-get install prometheus)")

DASHES = load_dashboards()
QUERIES = queries(DASHES)
DEADLINE = 45.0  # seconds after Prometheus is ready by which every query must have data
# Grafana's built-in variables for a 1s scrape interval and the default "last 1h" range.
BUILTINS = {"__rate_interval": "5s", "__interval": "1s", "__range": "1h"}

SIDECAR_CONFIG = {
    "lifecycle": {"abandon_after": "2s"},  # so the demo's abandoned runs are counted within the test
    "windows": {"prometheus_by": ["agent"]},  # per-agent exact quantiles
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    prometheus: str
    instance: str
    started: float
    demo: subprocess.Popen
    demo_log: Path
    variables: dict[str, dict[str, str]] = field(default_factory=dict)

    def api(self, path: str, **params: str):
        url = f"{self.prometheus}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def wait(self, what: str, check) -> object:
        """Poll `check()` until it returns something truthy, up to the shared deadline."""
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > self.started + DEADLINE:
                pytest.fail(f"no {what} within {DEADLINE:g}s of Prometheus starting")
            time.sleep(0.5)

    def resolve(self, dashboard: str) -> dict[str, str]:
        """Variable values as Grafana would pick them: defaults, All -> allValue, else the first value."""
        if dashboard not in self.variables:
            values = dict(BUILTINS)
            for var in DASHES[dashboard + ".json"]["templating"]["list"]:
                if var["type"] == "datasource":
                    values[var["name"]] = "prometheus"
                elif var["type"] == "custom":
                    values[var["name"]] = var["current"]["value"]
                elif var.get("includeAll") and var["current"].get("value") == ["$__all"]:
                    values[var["name"]] = var["allValue"]
                else:
                    values[var["name"]] = self.label_values(var["definition"], values)[0]
            self.variables[dashboard] = values
        return self.variables[dashboard]

    def label_values(self, definition: str, values: dict[str, str]) -> list[str]:
        selector, label = parse_label_values(substitute(definition, values))
        return self.wait(f"values for {definition}", lambda: self.api(f"label/{label}/values", **{"match[]": selector}))


def _api(url: str, path: str, **params: str):
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _scrape_config(instance: str) -> dict:
    """The committed scrape config, with the test's target, 1s intervals and absolute rule paths."""
    prom = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    prom["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    prom["rule_files"] = [str(PROMETHEUS / pattern) for pattern in prom["rule_files"]]
    prom["scrape_configs"][0]["static_configs"] = [{"targets": [instance]}]
    return prom


@contextlib.contextmanager
def running_prometheus(tmp: Path, config: dict) -> Iterator[str]:
    """The real Prometheus with exemplar storage on; yields its base URL once it is ready."""
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    with open(tmp / "prometheus.log", "wb") as log:
        prometheus = subprocess.Popen(
            [PROMETHEUS_BIN, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                if prometheus.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("prometheus did not start:\n" + (tmp / "prometheus.log").read_text())
                time.sleep(0.1)
        yield url
    finally:
        prometheus.terminate()
        prometheus.wait(10)


def _has_data(result: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    env = {"PYTHONPATH": str(REPO)}
    config = tmp / "sidecar.yaml"
    config.write_text(yaml.safe_dump(SIDECAR_CONFIG))
    sidecar = SidecarProcess(["--http", "127.0.0.1:0", "--unix", str(tmp / "ingest.sock"), "--config", str(config)], env=env)
    demo_log = tmp / "demo.log"
    with open(demo_log, "wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "demo", "--unix", sidecar.unix, "--rate", "300", "--workflows", "12",
             "--invalid", "0.01", "--abandon", "0.3", "--seed", "11", "--duration", "600"],
            stderr=log, env={**os.environ, **env},
        )
    instance = sidecar.url.removeprefix("http://")
    try:
        with running_prometheus(tmp, _scrape_config(instance)) as url:
            yield Stack(url, instance, time.monotonic(), demo, demo_log)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(10)
        sidecar.stop()


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.id)
def test_panel_query_returns_data(query: Query, request):
    stack: Stack = request.getfixturevalue("stack")
    expr = substitute(query.expr, stack.resolve(query.dashboard))
    stack.wait(f"data for {query.id}: {expr}", lambda: _has_data(stack.query(expr)))


def test_every_query_variable_lists_values(stack):
    for name, dash in DASHES.items():
        values = stack.resolve(name.removesuffix(".json"))
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                assert stack.label_values(var["definition"], values), var["name"]
    assert stack.resolve("sidecar-health")["instance"] == ".*"
    assert stack.label_values("label_values(sidecar_build_info, instance)", {}) == [stack.instance]


def test_duration_exemplars_carry_the_trace_id(stack):
    def exemplars():
        now = time.time()
        series = stack.api("query_exemplars", query='agent_event_duration_seconds_bucket{agent="coder"}', start=str(now - 120), end=str(now))
        return [e for s in series for e in s["exemplars"]]

    found = stack.wait("exemplars", exemplars)
    assert all(len(e["labels"]["trace_id"]) == 32 for e in found)


def test_every_rule_evaluates_cleanly_and_the_abandoned_runs_alert_fires(stack):
    def rules():
        groups = stack.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    assert len(stack.wait("healthy rules", rules)) == 19  # recording rules and alerts in prometheus/rules/
    firing = stack.wait(
        "firing AgentWorkflowRunsAbandoned",
        lambda: [a for a in stack.api("alerts")["alerts"] if a["labels"]["alertname"] == "AgentWorkflowRunsAbandoned" and a["state"] == "firing"],
    )
    assert firing[0]["labels"]["instance"] == stack.instance



# ---- the real Prometheus judges what hostile but accepted events do to a scrape ---------------

_LONG = 'x"\\\n\x00\x1b[2J\u202e\U0001f600' * 40  # quotes, escapes, control and bidi characters, 400+ chars


def _hostile_events(marker: str) -> list[dict]:
    """Events the contract accepts, each hostile where it can be: every id of the fuzz set as
    trace_id and span_id, every amount at its limit, long label values, lifecycle ends."""
    limits = {name: int(v) if "tokens" in name else v for name, v in fuzzing.MAXIMUM.items()}
    events = []
    for i, ident in enumerate(fuzzing._IDS):
        for ms in (1, 300, 5000, fuzzing.MAXIMUM["duration_ms"]):  # different buckets: one exemplar each
            events.append({"type": marker, "agent": f"a{i}", "trace_id": ident, "span_id": ident, **limits, "duration_ms": ms})
        events.append({"type": marker, "agent": _LONG + str(i), "workflow": _LONG, "model": _LONG, "error": _LONG,
                       "success": False, "trace_id": ident, "duration_ms": 42, "run_id": ident})
    events.append({"type": "workflow.started", "workflow": _LONG, "run_id": _LONG * 10, "trace_id": _LONG})
    events.append({"type": "workflow.completed", "workflow": _LONG, "run_id": _LONG * 10})
    return events


def _when(rfc3339: str) -> float:
    """Prometheus' lastScrape (nanosecond RFC 3339) as epoch seconds."""
    head, _, rest = rfc3339.rstrip("Z").partition(".")
    fraction = rest.split("+")[0].split("-")[0][:6]
    return datetime.fromisoformat(f"{head}.{fraction or 0}+00:00").timestamp()


@pytest.mark.untraced
def test_no_accepted_event_makes_a_scrape_invalid_for_a_real_prometheus(tmp_path):
    sidecar = SidecarProcess(["--http", "127.0.0.1:0", "--unix", str(tmp_path / "ingest.sock")], env={"PYTHONPATH": str(REPO)})
    instance = sidecar.url.removeprefix("http://")
    try:
        with running_prometheus(tmp_path, _scrape_config(instance)) as url:
            def target() -> dict:
                active = _api(url, "targets", state="active")["activeTargets"]
                return active[0] if active else {"health": "unknown", "lastScrape": "0001-01-01T00:00:00Z"}

            def scraped_since(when: float):
                t = target()
                return t if _when(t["lastScrape"]) > when else None

            deadline = time.monotonic() + 30

            def wait(what: str, check):
                while not (result := check()):
                    if time.monotonic() > deadline:
                        pytest.fail(f"no {what} within 30s")
                    time.sleep(0.2)
                return result

            wait("first healthy scrape", lambda: target()["health"] == "up")
            events = _hostile_events("hostile.event")
            body = "\n".join(json.dumps(e) for e in events).encode()
            request = urllib.request.Request(f"{sidecar.url}/v1/events", body, {"content-type": "application/x-ndjson"})
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.load(response)
            assert (answer["accepted"], answer["rejected"]) == (len(events), 0), answer  # never lose a good event
            sent = time.time()
            # Two whole scrapes after every event was in: each must have succeeded.
            first = wait("scrape after the events", lambda: scraped_since(sent + 0.1))
            assert (first["health"], first["lastError"]) == ("up", ""), first
            second = wait("second scrape", lambda: scraped_since(_when(first["lastScrape"])))
            assert (second["health"], second["lastError"]) == ("up", ""), second
            # The series are there, every value finite, and only W3C ids became exemplars.
            counted = wait("the hostile events", lambda: _api(url, "query", query='sum(agent_events_total{type="hostile.event"})')["result"])
            assert float(counted[0]["value"][1]) == len(events) - 2
            for metric in ("agent_cost_usd_total", "agent_tokens_total", "agent_event_duration_seconds_sum"):
                values = [float(r["value"][1]) for r in _api(url, "query", query=metric)["result"]]
                assert values and all(math.isfinite(v) for v in values), metric
            now = time.time()
            series = _api(url, "query_exemplars", query='agent_event_duration_seconds_bucket{type="hostile.event"}', start=str(now - 300), end=str(now))
            labels = [e["labels"] for s in series for e in s["exemplars"]]
            assert labels and all(fuzzing.w3c_id(v) for label in labels for v in label.values()), labels
    finally:
        sidecar.stop()
