"""The Helm chart: lint, render, schema and the security and RBAC facts of what it renders.

helm comes from hack/provision.py (PROXMIGRATE_HELM, the proxmigrate cache, PATH, or built);
without it these tests fail (not skip), so a missing tool cannot pass for a green chart.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "proxmigrate"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
CLUSTER_WIDE = CHART / "ci" / "cluster-wide-values.yaml"
# Kubernetes version the chart is rendered for: an ldflags-less helm build assumes 1.20.
KUBE_VERSION = "1.35.0"
RELEASE, NAMESPACE = "pm", "proxmigrate"

Manifest = dict[str, Any]
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"


def cached_tool(name: str) -> Path:
    """The pinned `name` that hack/provision.py finds or builds; a failure fails the test."""
    return tool(name)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cached_tool("helm")), *args], capture_output=True, text=True, timeout=60
    )


@cache
def render(*values_files: Path, sets: tuple[str, ...] = ()) -> tuple[Manifest, ...]:
    """Objects `helm template` renders for the given values (cached: renders are pure)."""
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION]
    for values in values_files:
        args += ["-f", str(values)]
    for assignment in sets:
        args += ["--set", assignment]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def only(manifests: tuple[Manifest, ...], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_roles(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    """The operator's Roles or ClusterRoles: not the ones aggregated into view/edit/admin."""
    return [
        m
        for m in of_kind(manifests, kind)
        if not any(label.startswith(AGGREGATE_TO) for label in m["metadata"]["labels"])
    ]


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a list of RBAC rules allows."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# What the operator does (brief of issue 6): kopf on the five kinds and their status,
# drains creating/deleting child VMMigrations, events, reading the named Secrets.
OWN_KINDS = ("proxmoxclusters", "nodedrains", "vmplacements", "vmmigrations", "nodemaintenances")
CHILD_KINDS = ("vmmigrations", "nodedrains")  # NodeMaintenances create NodeDrains
NEEDED_IN_WATCHED_NAMESPACE = (
    {("proxmigrate.dev", kind, verb) for kind in OWN_KINDS for verb in ("get", "list", "watch")}
    | {("proxmigrate.dev", kind, "patch") for kind in OWN_KINDS}
    | {("proxmigrate.dev", f"{kind}/status", "patch") for kind in OWN_KINDS}
    | {("proxmigrate.dev", kind, verb) for kind in CHILD_KINDS for verb in ("create", "delete")}
    | {("", "events", "create"), ("events.k8s.io", "events", "create")}
    | {("", "secrets", "get")}
)
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
# kopf's namespace observation in namespaced mode (found by tests/e2e/test_chart_apiserver.py).
NAMESPACE_READ = {("", "namespaces", v) for v in ("list", "watch")}


@pytest.mark.parametrize("values", [(), (ALL_FEATURES,), (CLUSTER_WIDE,)], ids=str)
def test_helm_lint_is_clean(values: tuple[Path, ...]) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", str(path)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("replicaCount=0", "/replicaCount"),
        ("securityContext.readOnlyRootFilesystem=false", "/securityContext/readOnlyRootFilesystem"),
        ("watch.allNamespaces=yes", "/watch/allNamespaces"),
        ("networkPolicy.proxmox.port=70000", "/networkPolicy/proxmox/port"),
        ("serviceMonitor.enable=true", "enable"),
        ("proxmox.credentials.tokenId=not-a-token-id", "/proxmox/credentials/tokenId"),
    ],
)
def test_values_schema_rejects_bad_values(assignment: str, complaint: str) -> None:
    result = helm("template", str(CHART), "--kube-version", KUBE_VERSION, "--set", assignment)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_chart_version_image_tag_and_package_version_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert chart["version"] == chart["appVersion"] == package
    container = only(render(), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"proxmigrate:{package}"


def test_chart_crds_are_a_copy_of_the_top_level_crds() -> None:
    top_level = sorted((REPO / "crds").glob("*.yaml"))
    if not top_level:
        pytest.skip("crds/ is still empty")
    expected = {p.name: p.read_text() for p in [*top_level, REPO / "hack/kopf-peering-crds.yaml"]}
    actual = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    differing = sorted(
        n for n in expected.keys() | actual.keys() if expected.get(n) != actual.get(n)
    )
    assert not differing, (
        f"charts/proxmigrate/crds differs in {differing}: run hack/sync-chart-crds.sh"
    )


@pytest.mark.parametrize("values", [(), (ALL_FEATURES,)], ids=["default", "all-features"])
def test_pods_run_hardened(values: tuple[Path, ...]) -> None:
    pod = only(render(*values), "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["limits"] and container["resources"]["requests"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_replicas_get_distinct_peering_priorities_from_their_ordinal() -> None:
    """Equal kopf priorities pause every replica, so each pod's priority is -ordinal."""
    manifests = render()
    workload = only(manifests, "StatefulSet")
    assert workload["spec"]["replicas"] == 2
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env["POD_INDEX"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["POD_ID"] == "metadata.name"
    assert "--priority=-$(POD_INDEX)" in container["args"]
    assert "--peering=proxmigrate" in container["args"]
    assert only(manifests, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_namespaced_mode_keeps_everything_but_the_crd_and_namespace_reads_in_roles() -> None:
    manifests = render(ALL_FEATURES)
    (cluster_role,) = operator_roles(manifests, "ClusterRole")
    assert granted(cluster_role["rules"]) == CRD_READ | NAMESPACE_READ
    roles = [r for r in of_kind(manifests, "Role") if r["metadata"]["name"] == "pm-proxmigrate"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["pve-lab", "pve-prod"]
    for role in roles:
        rules = granted(role["rules"])
        assert rules >= NEEDED_IN_WATCHED_NAMESPACE
        assert ("kopf.dev", "kopfpeerings", "patch") in rules
    peerings = of_kind(manifests, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["pve-lab", "pve-prod"]
    container = only(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert {"--namespace=pve-prod", "--namespace=pve-lab"} <= set(container["args"])


def test_cluster_mode_uses_one_cluster_role_and_a_cluster_peering() -> None:
    manifests = render(CLUSTER_WIDE)
    assert not of_kind(manifests, "Role")
    assert not of_kind(manifests, "KopfPeering")
    assert only(manifests, "ClusterKopfPeering")["metadata"]["name"] == "proxmigrate"
    (cluster_role,) = operator_roles(manifests, "ClusterRole")
    rules = granted(cluster_role["rules"])
    assert rules >= NEEDED_IN_WATCHED_NAMESPACE | CRD_READ
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in rules
    args = only(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args


@pytest.mark.parametrize("values", [(), (ALL_FEATURES,), (CLUSTER_WIDE,)], ids=str)
def test_rbac_has_no_wildcards_and_reads_only_named_secrets(values: tuple[Path, ...]) -> None:
    manifests = render(*values)
    for role in operator_roles(manifests, "Role") + operator_roles(manifests, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"update", "deletecollection", "escalate", "bind"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                assert rule["resourceNames"] and rule["verbs"] == ["get"]
            if "delete" in rule["verbs"]:
                assert set(rule["resources"]) <= set(CHILD_KINDS)


def test_the_created_and_listed_secrets_are_readable_where_they_live() -> None:
    """Chart Secrets sit in the release namespace, which all-features does not watch."""
    manifests = render(ALL_FEATURES)
    secrets = {s["metadata"]["name"] for s in of_kind(manifests, "Secret")}
    assert secrets == {"pm-proxmigrate-pve-token", "pm-proxmigrate-pve-ca"}
    assert {s["metadata"]["namespace"] for s in of_kind(manifests, "Secret")} == {NAMESPACE}
    readable: dict[str, set[str]] = {}
    for role in of_kind(manifests, "Role"):
        for rule in (r for r in role["rules"] if "secrets" in r["resources"]):
            readable.setdefault(role["metadata"]["namespace"], set()).update(rule["resourceNames"])
    expected = secrets | {"pve-lab-token"}
    assert readable == {"pve-prod": expected, "pve-lab": expected, NAMESPACE: expected}
    bindings = {b["metadata"]["namespace"] for b in of_kind(manifests, "RoleBinding")}
    assert bindings == set(readable)


def test_monitoring_objects_follow_their_flags() -> None:
    flagged = ("ServiceMonitor", "PrometheusRule", "NetworkPolicy", "ConfigMap")
    default = render()
    assert not [m for m in default if m["kind"] in flagged]
    manifests = render(ALL_FEATURES)
    rule = only(manifests, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = only(manifests, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    expected = json.loads((CHART / "files/dashboard.json").read_text())
    assert json.loads(dashboard["data"]["proxmigrate.json"]) == expected
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = only(manifests, "Service")
    assert service["spec"]["ports"][0]["name"] == "metrics"
    policy = only(manifests, "NetworkPolicy")["spec"]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {443, 6443, 8006, 53}
