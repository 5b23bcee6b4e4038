"""The alert rules: promtool parses them and runs their unit tests, and every alert has a
test where it fires and one where it stays silent."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_chart import CHART, cached_tool, only, render

ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = CHART / "files" / "alerts_test.yaml"


def promtool(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cached_tool("promtool")), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def alert_names() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_promtool_rule_tests_pass() -> None:
    result = promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases: list[dict[str, Any]] = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for name in alert_names():
        expectations = [case["exp_alerts"] for case in cases if case["alertname"] == name]
        assert any(expectations), f"{name} is never expected to fire"
        assert any(not e for e in expectations), f"{name} is never expected to stay silent"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


TROUBLESHOOTING = CHART.parent.parent / "docs" / "troubleshooting.md"
THRESHOLD = re.compile(r"([0-9.]+) *# threshold: (\w+)")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_links_its_own_troubleshooting_section() -> None:
    sections = anchors(TROUBLESHOOTING.read_text())
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == "https://proxmigrate.dev/docs/troubleshooting.md", url
        assert anchor == rule["alert"].lower(), url
        assert anchor in sections, f"docs/troubleshooting.md has no section #{anchor}"


def test_every_threshold_in_the_rules_is_a_chart_value_with_the_same_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["thresholds"]
    marked = {key: float(number) for number, key in THRESHOLD.findall(ALERTS.read_text())}
    assert marked == {key: float(value) for key, value in values.items()}


def test_chart_values_set_thresholds_durations_and_the_runbook_base(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "prometheusRule": {
                    "enabled": True,
                    "interval": "5s",
                    "runbookBaseURL": "https://wiki.example/proxmigrate",
                    "thresholds": {"sshDrops": 7, "failureRatio": 0.35},
                    "for": {"ProxmigrateDrainBlocked": "1m"},
                }
            }
        )
    )
    spec = only(render(values), "PrometheusRule")["spec"]
    rendered = {rule["alert"]: rule for group in spec["groups"] for rule in group["rules"]}
    assert spec["groups"][0]["interval"] == "5s"
    assert "> 7 # threshold: sshDrops" in rendered["ProxmigrateSSHDrops"]["expr"]
    assert (
        "> 0.35 # threshold: failureRatio"
        in rendered["ProxmigrateMigrationFailureRatioHigh"]["expr"]
    )
    assert (
        ">= 5 # threshold: failureMinimum"
        in rendered["ProxmigrateMigrationFailureRatioHigh"]["expr"]
    )
    assert rendered["ProxmigrateDrainBlocked"]["for"] == "1m"
    assert rendered["ProxmigrateDrainStalled"]["for"] == "5m"
    assert rendered["ProxmigrateSSHDrops"]["annotations"]["runbook_url"] == (
        "https://wiki.example/proxmigrate#proxmigratesshdrops"
    )
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump(spec))
    result = promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr
