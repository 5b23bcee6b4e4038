"""The Grafana dashboard and the alerts use only series the operator exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from proxmigrate.metrics import REGISTRY
from tests.unit.test_chart import CHART

DASHBOARD = CHART / "files" / "dashboard.json"
ALERTS = CHART / "files" / "alerts.yaml"
METRIC_NAME = re.compile(r"\bproxmigrate_[a-z0-9_]+")
# Series names the Prometheus text exposition derives from each metric type.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series() -> set[str]:
    """Every series name proxmigrate.metrics exports, derived from its registry."""
    return {
        family.name + suffix for family in REGISTRY.collect() for suffix in SUFFIXES[family.type]
    }


def panel_exprs(panels: list[dict[str, Any]]) -> Iterator[str]:
    for panel in panels:
        yield from (target["expr"] for target in panel.get("targets", []))
        yield from panel_exprs(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return [*panel_exprs(dashboard["panels"]), *variables]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_registry_yields_series_names() -> None:
    series = exported_series()
    assert "proxmigrate_migrations_total" in series
    assert "proxmigrate_migration_duration_seconds_bucket" in series
    assert "proxmigrate_migrations" not in series


def test_dashboard_references_only_exported_metrics() -> None:
    used = {name for expr in dashboard_queries() for name in METRIC_NAME.findall(expr)}
    assert used, "the dashboard queries no proxmigrate metric"
    assert used <= exported_series(), f"unknown: {sorted(used - exported_series())}"


def test_alerts_reference_only_exported_metrics() -> None:
    used = {name for expr in alert_exprs() for name in METRIC_NAME.findall(expr)}
    assert used, "the alerts query no proxmigrate metric"
    assert used <= exported_series(), f"unknown: {sorted(used - exported_series())}"


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in (p for p in panels if p["type"] != "row"):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


SELECTOR = re.compile(r"\b(proxmigrate_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")


def exported_labels() -> dict[str, set[str]]:
    """Label names of every exported series (histogram buckets add `le`)."""
    return {
        family.name + suffix: {
            *family_labels(family.name),
            *(["le"] if suffix == "_bucket" else []),
        }
        for family in REGISTRY.collect()
        for suffix in SUFFIXES[family.type]
    }


def family_labels(name: str) -> set[str]:
    from proxmigrate import metrics

    for metric in metrics.LABELLED:
        if metric._name == name:
            return set(metric._labelnames)
    return set()


def test_queries_use_only_labels_their_metrics_have() -> None:
    labels = exported_labels()
    every = set().union(*labels.values())
    for expr in [*dashboard_queries(), *alert_exprs()]:
        for name, matchers in SELECTOR.findall(expr):
            used = set(MATCHER.findall(matchers))
            assert used <= labels[name], f"{name} has no {used - labels[name]}: {expr}"
        for grouping in GROUPING.findall(expr):
            used = {label.strip() for label in grouping.split(",") if label.strip()}
            assert used <= every, f"no metric has {used - every}: {expr}"
