"""The alert rules: promtool parses them and runs their unit tests, and every alert has a
test where it fires and one where it stays silent."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_chart import CHART, cached_tool

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
