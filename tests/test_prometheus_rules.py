"""prometheus/: the scrape config and rule files pass the real promtool, and the rule unit tests
fire every alert and check every recording rule on series shaped like the sidecar's."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from grafana_queries import PROMETHEUS, REPO

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")

RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
# What the issue asks an operator to be told about.
EXPECTED_ALERTS = {
    "AgentErrorRateHigh", "AgentLatencyP95High", "AgentCostBurnRateHigh", "AgentWorkflowRunsAbandoned",
    "AgentInsightCritical", "SidecarRejectingEvents", "SidecarDroppingEvents", "SidecarSeriesOverflow", "SidecarDown",
}


def _rules() -> list[dict]:
    return [r for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def _unit_tests() -> list[dict]:
    return [t for path in TEST_FILES for t in yaml.safe_load(path.read_text())["tests"]]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_promtool_accepts_the_scrape_config_and_finds_every_rule_file():
    result = promtool("check", "config", "prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_accepts_the_rule_file(path):
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    assert TEST_FILES
    result = promtool("test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_makes_the_rule_unit_tests_fail(tmp_path):
    """The unit tests really compare values: a changed annotation is caught."""
    shutil.copytree(PROMETHEUS / "rules", tmp_path / "rules")
    (tmp_path / "tests").mkdir()
    broken = tmp_path / "tests" / "broken.test.yml"  # same layout, so the relative rule_files resolve
    broken.write_text(TEST_FILES[0].read_text().replace("is down", "is up"))
    result = promtool("test", "rules", str(broken))
    assert result.returncode == 1
    assert "SidecarDown" in result.stdout + result.stderr


def test_the_alert_set_is_what_operators_need():
    assert {r["alert"] for r in _rules() if "alert" in r} == EXPECTED_ALERTS


def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another():
    fired, quiet = set(), set()
    for test in _unit_tests():
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fired == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_every_recording_rule_is_checked_by_a_unit_test():
    recorded = {r["record"] for r in _rules() if "record" in r}
    checked = {case["expr"].split("{")[0] for test in _unit_tests() for case in test.get("promql_expr_test", [])}
    assert recorded - checked == set()


def test_every_alert_has_a_summary_a_description_and_a_runbook_entry():
    readme = (REPO / "README.md").read_text()
    runbook = readme[readme.index("### Alert runbook"):]
    for rule in _rules():
        if "alert" in rule:
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert f"`{rule['alert']}`" in runbook, f"{rule['alert']} has no runbook line in the README"


def test_recorded_series_keep_job_and_instance_for_the_fleet_variable():
    for rule in _rules():
        if "record" in rule and "sum by" in rule["expr"]:
            assert "job, instance" in rule["expr"], rule["record"]
