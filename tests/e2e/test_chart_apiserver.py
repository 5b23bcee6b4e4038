"""The Helm chart on a real kube-apiserver: every rendered object passes a strict
server-side dry run, and the operator drains a node under nothing but the chart's RBAC."""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from tests.e2e.chart_env import (
    PROMETHEUS_OPERATOR_CRDS,
    Manifest,
    apply,
    describe,
    render,
    server_version,
    service_account_kubeconfig,
    strict_dry_run,
)
from tests.e2e.operator_env import condition, create
from tests.e2e.test_operator_drains import connect, node, nodedrain, start_sim, vm, wait_phase
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, ensure_namespace
from tests.unit.test_chart import ALL_FEATURES, CLUSTER_WIDE, NAMESPACE

RBAC_NAMESPACE = "e2e-chart-rbac"  # watched by no other operator in the suite
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# Every 403 from kube-apiserver carries reason Forbidden, which kopf and the kubernetes
# client both log (a bare "403" would also match timestamps' milliseconds); kopf warns
# "Not enough permissions" when it falls back after a denied list or watch.
DENIED = re.compile("forbidden|not enough permissions", re.IGNORECASE)


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Any:
    control_plane.apply_crds([PROMETHEUS_OPERATOR_CRDS])
    return control_plane.api_client()


@pytest.fixture(scope="module")
def kube_version(admin: Any) -> str:
    return server_version(admin)


def dry_run_rejections(admin: Any, manifests: list[Manifest]) -> dict[str, str]:
    """Object -> the apiserver's reason, for every object a strict dry run refuses."""
    for namespace in {NAMESPACE} | {m["metadata"].get("namespace") for m in manifests} - {None}:
        ensure_namespace(admin, namespace)
    rejected = {}
    for manifest in manifests:
        try:
            strict_dry_run(admin, manifest)
        except DynamicApiError as error:
            rejected[describe(manifest)] = error.summary()
    return rejected


@pytest.mark.parametrize(
    ("values", "expected_kinds"),
    [
        ((), {"StatefulSet", "Service", "PodDisruptionBudget", "KopfPeering", "Role"}),
        (
            (ALL_FEATURES,),
            {"ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy", "Secret"},
        ),
        ((CLUSTER_WIDE,), {"ClusterKopfPeering", "ClusterRole", "CustomResourceDefinition"}),
    ],
    ids=["default", "all-features", "cluster-wide"],
)
def test_every_rendered_object_passes_a_strict_server_side_dry_run(
    admin: Any, kube_version: str, values: tuple[Path, ...], expected_kinds: set[str]
) -> None:
    manifests = render(kube_version, NAMESPACE, *values)

    assert expected_kinds <= {m["kind"] for m in manifests}
    assert dry_run_rejections(admin, manifests) == {}


def test_the_strict_dry_run_refuses_unknown_fields(admin: Any, kube_version: str) -> None:
    """The check above can fail: a misspelt field in a built-in or a fixture kind is refused."""
    manifests = render(kube_version, NAMESPACE, ALL_FEATURES)
    statefulset = copy.deepcopy(next(m for m in manifests if m["kind"] == "StatefulSet"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    monitor = copy.deepcopy(next(m for m in manifests if m["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"

    rejected = dry_run_rejections(admin, [statefulset, monitor])

    assert set(rejected) == {describe(statefulset), describe(monitor)}
    assert (
        'strict decoding error: unknown field "spec.template.spec.containers[0].livenesProbe"'
        in str(rejected)
    )
    assert 'unknown field "spec.endpoints[0].scrapeTimout"' in str(rejected)


@pytest.fixture
def chart_rbac(admin: Any, kube_version: str) -> list[Manifest]:
    """The chart's ServiceAccount, RBAC and KopfPeering, applied for real (namespaced mode).

    The ProxmoxCluster's Secret is `lab-token` (devenv.create_cluster_for_pvesim), given to
    the chart as its existing credentials Secret, so RBAC names it.
    """
    manifests = render(
        kube_version, RBAC_NAMESPACE, sets=("proxmox.credentials.existingSecret=lab-token",)
    )
    applied = [m for m in manifests if m["kind"] in RBAC_KINDS | {"KopfPeering"}]
    ensure_namespace(admin, RBAC_NAMESPACE)
    for manifest in applied:
        apply(admin, manifest)
    return applied


def test_operator_drains_a_node_under_the_charts_rbac(
    control_plane: ControlPlane, admin: Any, chart_rbac: list[Manifest], tmp_path: Path
) -> None:
    assert {m["kind"] for m in chart_rbac} == RBAC_KINDS | {"KopfPeering"}
    account = next(m for m in chart_rbac if m["kind"] == "ServiceAccount")["metadata"]["name"]
    peering = next(m for m in chart_rbac if m["kind"] == "KopfPeering")["metadata"]["name"]
    kubeconfig = service_account_kubeconfig(
        control_plane, RBAC_NAMESPACE, account, tmp_path / "kubeconfig"
    )
    as_operator = kube_config.new_client_from_config(config_file=str(kubeconfig))
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(as_operator).read_namespaced_secret("not-granted", RBAC_NAMESPACE)
    assert refused.value.status == 403  # the token really is the ServiceAccount's

    config = {
        "nodes": [node("pve1", 64), node("pve2", 64), node("pve3", 64)],
        "vms": [vm(100 + index, "pve1", 2) for index in range(4)],
    }
    log = tmp_path / "operator.log"
    with (
        start_sim(tmp_path, config) as sim,
        OperatorProcess(kubeconfig, log, namespace=RBAC_NAMESPACE, peering=peering) as operator,
    ):
        connect(admin, RBAC_NAMESPACE, sim, operator)
        began = time.monotonic()
        create(admin, RBAC_NAMESPACE, "nodedrains", nodedrain("pve1", "pve1"))
        status = wait_phase(
            admin, RBAC_NAMESPACE, "pve1", {"Drained", "Failed"}, operator, timeout=45
        )
        elapsed = time.monotonic() - began
        placement = sim.state()["placement"]
        peers = peering_status(admin, peering)

    assert peers, "the operator never joined the chart's KopfPeering"
    assert status["phase"] == "Drained", status.get("conditions")
    assert (status["total"], status["migrated"], status["failed"]) == (4, 4, 0)
    assert condition({"status": status}, "Ready")["status"] == "True"
    assert not [vmid for vmid, where in placement.items() if where == "pve1"]
    denied = [line for line in log.read_text().splitlines() if DENIED.search(line)]
    assert denied == []
    print(f"4-VM drain under the chart's RBAC took {elapsed:.1f} s")


def peering_status(admin: Any, name: str) -> dict[str, Any]:
    """The KopfPeering's status: one entry per live operator (kopf's keep-alive patches)."""
    peering = client.CustomObjectsApi(admin).get_namespaced_custom_object(
        "kopf.dev", "v1", RBAC_NAMESPACE, "kopfpeerings", name
    )
    return dict(peering.get("status") or {})
