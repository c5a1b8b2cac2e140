"""Structural checks of grafana/dashboards/*.json: what Grafana needs to load them and a fleet to use them."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from grafana_queries import (
    BUILTINS, DASHBOARDS, PROMETHEUS, REPO, load_dashboards, panels, parse_label_values, queries, variables_used,
)

DASHES = load_dashboards()
UIDS = {"agents-overview.json": "agent-sidecar-overview", "agent-detail.json": "agent-sidecar-agent", "sidecar-health.json": "agent-sidecar-health"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", REPO / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data_panels(dash: dict) -> list[dict]:
    return [p for p in panels(dash) if p["type"] != "row"]


def _template_vars(dash: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dash["templating"]["list"]}


by_file = pytest.mark.parametrize("name", sorted(DASHES))


def test_committed_dashboards_are_what_the_generator_writes():
    generated = _generator().render()
    assert sorted(generated) == sorted(DASHES)
    for name, text in generated.items():
        assert (DASHBOARDS / name).read_text() == text, f"{name} is stale: run python grafana/generate.py"


def test_generator_check_mode_reports_stale_files(tmp_path, monkeypatch, capsys):
    gen = _generator()
    monkeypatch.setattr(gen, "OUT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DASHES)


def test_every_dashboard_has_its_stable_uid_and_the_current_schema():
    assert {name: d["uid"] for name, d in DASHES.items()} == UIDS
    for dash in DASHES.values():
        assert dash["schemaVersion"] >= 39
        assert dash["id"] is None  # provisioning assigns ids; a fixed one would clash across Grafanas


@by_file
def test_panel_ids_are_unique(name):
    ids = [p["id"] for p in panels(DASHES[name])]
    assert len(ids) == len(set(ids))


@by_file
def test_every_panel_and_query_reads_the_datasource_variable(name):
    dash = DASHES[name]
    for panel in _data_panels(dash):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for var in _template_vars(dash).values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]


@by_file
def test_datasource_and_instance_variables_are_defined(name):
    variables = _template_vars(DASHES[name])
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert parse_label_values(instance["definition"]) == ("sidecar_build_info", "instance")
    assert instance["multi"] and instance["includeAll"] and instance["allValue"] == ".*"


@by_file
def test_every_variable_used_is_defined(name):
    dash = DASHES[name]
    defined = set(_template_vars(dash)) | BUILTINS
    texts = []
    for panel in panels(dash):
        texts += [panel["title"], panel.get("description", "")]
        texts += [t["expr"] for t in panel.get("targets", [])] + [t.get("legendFormat", "") for t in panel.get("targets", [])]
    texts += [v.get("definition", "") for v in _template_vars(dash).values()]
    used = set().union(*map(variables_used, texts))
    assert used - defined == set()


@by_file
def test_every_panel_has_a_unit(name):
    for panel in _data_panels(DASHES[name]):
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")
METRIC = re.compile(r"\b(?:[a-z_]+:[\w:]+|(?:agent|sidecar|process)_\w+|up|scrape_duration_seconds)\b(?!\s*\()")


@by_file
def test_every_selector_is_filtered_by_instance(name):
    """So one board serves a fleet: no query reads a metric without the $instance filter."""
    for q in queries({name: DASHES[name]}):
        for metric in METRIC.finditer(q.expr):
            rest = q.expr[metric.end():]
            assert rest.startswith("{"), f"{q.id}: {metric[0]} has no selector"
        for _, matchers in SELECTOR.findall(q.expr):
            assert 'instance=~"$instance"' in matchers, q.id


def test_percentiles_come_from_classic_histogram_buckets():
    found = 0
    for q in queries(DASHES):
        for m in re.finditer(r"histogram_quantile\(([^,]+),(.*)", q.expr):
            found += 1
            assert "_bucket" in m[2] and re.search(r"by \([^)]*\ble\b", m[2]), q.id
    assert found >= 9


def test_recording_rules_the_dashboards_read_are_defined():
    recorded = set()
    for path in (PROMETHEUS / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            recorded |= {r["record"] for r in group["rules"] if "record" in r}
    used = {name for q in queries(DASHES) for name in re.findall(r"\b[a-z_]+:[\w:]+", q.expr)}
    assert used and used <= recorded


def test_agent_detail_links_exemplars_and_shows_exact_beside_estimated_quantiles():
    dash = DASHES["agent-detail.json"]
    assert {"agent", "workflow"} <= set(_template_vars(dash))
    targets = [t for p in panels(dash) for t in p.get("targets", [])]
    assert any(t.get("exemplar") for t in targets)
    (panel,) = [p for p in panels(dash) if "Exact window" in p["title"]]
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("agent_window_duration_seconds" in e for e in exprs)
    assert any("histogram_quantile" in e for e in exprs)
