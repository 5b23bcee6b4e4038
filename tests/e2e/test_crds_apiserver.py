"""The CRDs on a real kube-apiserver: defaults, schema and CEL rejections, status, columns."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from proxmigrate import api
from tests.support.controlplane import ControlPlane

NAMESPACE = "crd-tests"
Body = dict[str, Any]


@pytest.fixture(scope="module")
def custom(control_plane: ControlPlane) -> client.CustomObjectsApi:
    api_client = control_plane.api_client()
    try:
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as error:
        if error.status != 409:
            raise
    return client.CustomObjectsApi(api_client)


def body(resource: api.Resource, spec: Body) -> Body:
    return {
        "apiVersion": api.API_VERSION,
        "kind": resource.kind,
        "metadata": {"name": f"{resource.short_name}-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }


def create(custom: client.CustomObjectsApi, resource: api.Resource, spec: Body) -> Body:
    created: Body = custom.create_namespaced_custom_object(
        api.GROUP, api.VERSION, NAMESPACE, resource.plural, body(resource, spec)
    )
    return created


def rejection(call: Callable[[], object]) -> str:
    """The API server's message for a request it must refuse (422 Invalid)."""
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 422, caught.value.body
    message: str = json.loads(caught.value.body)["message"]
    return message


CLUSTER = {"endpoints": ["pve1:8006"], "credentialsSecretRef": {"name": "pve-token"}}
MIGRATION = {"clusterRef": {"name": "lab"}, "vmid": 120, "target": "pve2"}
DRAIN = {"clusterRef": {"name": "lab"}, "nodeName": "pve1"}
PLACEMENT = {"clusterRef": {"name": "lab"}, "vmid": 120, "node": "pve2"}


def raw_get(control_plane: ControlPlane, path: str, accept: str = "application/json") -> Any:
    """GET a path the typed client has no method for, decoded from JSON."""
    api_client = control_plane.api_client()
    request = api_client.param_serialize(
        "GET", path, header_params={"Accept": accept}, auth_settings=["BearerToken"]
    )
    response = api_client.call_api(*request)
    response.read()
    return json.loads(response.data)


def with_changes(base: Body, **changes: Any) -> Body:
    spec = copy.deepcopy(base)
    spec.update(changes)
    return spec


def test_cluster_defaults_are_applied(custom: client.CustomObjectsApi) -> None:
    spec = create(custom, api.PROXMOX_CLUSTER, CLUSTER)["spec"]
    policy = spec["migrationPolicy"]
    assert policy["type"] == "secure" and policy["allowInsecure"] is False
    assert policy["maxParallel"] == 8
    assert policy["targetSshMaxStartups"] == "10:30:100"
    assert policy["retry"] == {"maxAttempts": 5, "backoffSeconds": 5, "maxBackoffSeconds": 300}
    assert spec["tls"] == {"insecureSkipVerify": False}
    assert api.ProxmoxClusterSpec.from_spec(spec) == api.ProxmoxClusterSpec.from_spec(CLUSTER)


def test_insecure_without_consent_is_accepted_for_the_controller_to_report(
    custom: client.CustomObjectsApi,
) -> None:
    spec = with_changes(CLUSTER, migrationPolicy={"type": "insecure"})
    assert (
        create(custom, api.PROXMOX_CLUSTER, spec)["spec"]["migrationPolicy"]["type"] == "insecure"
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"migrationPolicy": {"maxParallel": 4, "maxParallelPerTarget": 6}},
            "maxParallelPerTarget must not exceed migrationPolicy.maxParallel",
        ),
        (
            {"migrationPolicy": {"maxParallelPerSource": 9}},
            "maxParallelPerSource must not exceed migrationPolicy.maxParallel",
        ),
        ({"migrationPolicy": {"targetSshMaxStartups": "10:30"}}, "targetSshMaxStartups"),
        (
            {"migrationPolicy": {"targetSshMaxStartups": "30:30:10"}},
            "start <= full and rate 1..100",
        ),
        ({"migrationPolicy": {"targetSshMaxStartups": "0"}}, "start must be at least 1"),
        (
            {"migrationPolicy": {"retry": {"backoffSeconds": 60, "maxBackoffSeconds": 30}}},
            "backoffSeconds must not exceed retry.maxBackoffSeconds",
        ),
        ({"migrationPolicy": {"maxParallel": 0}}, "should be greater than or equal to 1"),
        ({"migrationPolicy": {"type": "fast"}}, 'supported values: "secure", "insecure"'),
        ({"endpoints": ["pve1:99999"]}, "port of an endpoint must be between 1 and 65535"),
        ({"endpoints": ["https://pve1"]}, "spec.endpoints[0]"),
        (
            {"endpoints": ["pve2", "https://pve1:8006/#v1:0:18:4"]},
            "write 'pve1:8006' instead of 'https://pve1:8006/#v1:0:18:4'",
        ),
        ({"endpoints": ["pve1/api2/json"]}, "write 'pve1' instead of 'pve1/api2/json'"),
        ({"endpoints": []}, "spec.endpoints"),
        (
            {"tls": {"caBundle": "PEM", "caSecretRef": {"name": "ca"}}},
            "either tls.caBundle or tls.caSecretRef",
        ),
    ],
)
def test_cluster_rejections(custom: client.CustomObjectsApi, changes: Body, expected: str) -> None:
    spec = with_changes(CLUSTER, **changes)
    message = rejection(lambda: create(custom, api.PROXMOX_CLUSTER, spec))
    assert expected in message


def test_migration_spec_is_immutable(custom: client.CustomObjectsApi) -> None:
    created = create(custom, api.VM_MIGRATION, MIGRATION)
    assert created["spec"]["online"] is True and created["spec"]["priority"] == 0
    name = created["metadata"]["name"]
    message = rejection(
        lambda: custom.patch_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            NAMESPACE,
            api.VMMIGRATIONS,
            name,
            {"spec": {"target": "pve3"}},
        )
    )
    assert "spec is immutable" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"source": "pve2"}, "spec.source and spec.target must differ"),
        ({"vmid": 99}, "spec.vmid"),
        ({"target": "pve_2"}, "spec.target"),
        ({"priority": 5000}, "spec.priority"),
    ],
)
def test_migration_rejections(
    custom: client.CustomObjectsApi, changes: Body, expected: str
) -> None:
    spec = with_changes(MIGRATION, **changes)
    assert expected in rejection(lambda: create(custom, api.VM_MIGRATION, spec))


def test_drain_node_and_cluster_are_immutable_but_other_fields_change(
    custom: client.CustomObjectsApi,
) -> None:
    created = create(custom, api.NODE_DRAIN, DRAIN)
    assert created["spec"]["localDisks"] == "skip"
    assert created["spec"]["stoppedVMs"] == "migrate"
    name = created["metadata"]["name"]

    def patch(spec: Body) -> Body:
        patched: Body = custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, NAMESPACE, api.NODEDRAINS, name, {"spec": spec}
        )
        return patched

    assert patch({"maxParallel": 2})["spec"]["maxParallel"] == 2
    assert "spec.nodeName is immutable" in rejection(lambda: patch({"nodeName": "pve9"}))
    assert "spec.clusterRef is immutable" in rejection(
        lambda: patch({"clusterRef": {"name": "other"}})
    )
    assert "spec.dryRun is immutable" in rejection(lambda: patch({"dryRun": True}))


def test_a_dry_run_drain_stays_one(custom: client.CustomObjectsApi) -> None:
    name = create(custom, api.NODE_DRAIN, with_changes(DRAIN, dryRun=True))["metadata"]["name"]
    message = rejection(
        lambda: custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, NAMESPACE, api.NODEDRAINS, name, {"spec": {"dryRun": False}}
        )
    )
    assert "spec.dryRun is immutable" in message


def test_maintenance_done_needs_return_guests_and_stays_set(
    custom: client.CustomObjectsApi,
) -> None:
    assert "spec.maintenanceDone only ends a drain with spec.returnGuests: true" in rejection(
        lambda: create(custom, api.NODE_DRAIN, with_changes(DRAIN, maintenanceDone=True))
    )
    dry_run = with_changes(DRAIN, dryRun=True, returnGuests=True, maintenanceDone=True)
    assert "cannot be set on a dry run" in rejection(
        lambda: create(custom, api.NODE_DRAIN, dry_run)
    )
    created = create(custom, api.NODE_DRAIN, with_changes(DRAIN, avoidTargets=["pve3"]))
    assert (created["spec"]["returnGuests"], created["spec"]["maintenanceDone"]) == (False, False)
    name = created["metadata"]["name"]

    def patch(spec: Body) -> Body:
        patched: Body = custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, NAMESPACE, api.NODEDRAINS, name, {"spec": spec}
        )
        return patched

    assert patch({"returnGuests": True, "maintenanceDone": True})["spec"]["maintenanceDone"]
    assert "spec.maintenanceDone cannot be set back to false" in rejection(
        lambda: patch({"maintenanceDone": False})
    )
    assert "spec.maintenanceDone only ends a drain" in rejection(
        lambda: patch({"returnGuests": False})
    )


def test_placement_defaults(custom: client.CustomObjectsApi) -> None:
    spec = create(custom, api.VM_PLACEMENT, PLACEMENT)["spec"]
    assert spec["policy"] == "enforce"
    assert spec["flapGuard"] == {"maxMigrations": 3, "windowSeconds": 3600}
    selector_spec = {"clusterRef": {"name": "lab"}, "selector": {"tags": ["web"]}, "nodes": ["a"]}
    assert create(custom, api.VM_PLACEMENT, selector_spec)["spec"]["selector"]["tags"] == ["web"]


def test_placement_cluster_is_immutable_but_its_target_changes(
    custom: client.CustomObjectsApi,
) -> None:
    name = create(custom, api.VM_PLACEMENT, PLACEMENT)["metadata"]["name"]

    def patch(spec: Body) -> Body:
        patched: Body = custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, NAMESPACE, api.VMPLACEMENTS, name, {"spec": spec}
        )
        return patched

    assert patch({"node": "pve3"})["spec"]["node"] == "pve3"
    assert "spec.clusterRef is immutable" in rejection(
        lambda: patch({"clusterRef": {"name": "other"}})
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (with_changes(PLACEMENT, name="web-1"), "exactly one of spec.vmid, spec.name"),
        ({"clusterRef": {"name": "lab"}, "node": "pve2"}, "exactly one of spec.vmid, spec.name"),
        (with_changes(PLACEMENT, nodes=["pve3"]), "exactly one of spec.node or spec.nodes"),
        ({"clusterRef": {"name": "lab"}, "vmid": 120}, "exactly one of spec.node or spec.nodes"),
        (
            {"clusterRef": {"name": "lab"}, "selector": {}, "node": "pve2"},
            "spec.selector needs tags or pool",
        ),
        (with_changes(PLACEMENT, policy="always"), 'supported values: "enforce", "report"'),
    ],
)
def test_placement_rejections(custom: client.CustomObjectsApi, spec: Body, expected: str) -> None:
    assert expected in rejection(lambda: create(custom, api.VM_PLACEMENT, spec))


def test_status_subresource_and_printer_columns(
    custom: client.CustomObjectsApi, control_plane: ControlPlane
) -> None:
    name = create(custom, api.PROXMOX_CLUSTER, CLUSTER)["metadata"]["name"]
    conditions = api.set_condition(
        [], "Ready", True, "Connected", "API answers", 1, api.parse_rfc3339("2026-01-01T00:00:00Z")
    )
    status = {
        "observedGeneration": 1,
        "conditions": conditions,
        "pveVersion": "8.4.1",
        "nodesOnline": "3/4",
        "nodeCount": 4,
        "vmCount": 40,
        "nodes": [{"name": "pve1", "online": True}],
        "kopf": {"progress": {"anything": {"goes": 1}}},
    }
    custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, NAMESPACE, api.PROXMOXCLUSTERS, name, {"status": status}
    )
    stored = custom.get_namespaced_custom_object(
        api.GROUP, api.VERSION, NAMESPACE, api.PROXMOXCLUSTERS, name
    )
    assert stored["status"]["kopf"] == status["kopf"]

    table = raw_get(
        control_plane,
        f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/{api.PROXMOXCLUSTERS}/{name}",
        accept="application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    columns = [column["name"] for column in table["columnDefinitions"]]
    assert columns[:5] == ["Name", "Ready", "Version", "Nodes", "VMs"]
    assert table["rows"][0]["cells"][1:5] == ["True", "8.4.1", "3/4", 40]


def test_status_rejects_unknown_phase(custom: client.CustomObjectsApi) -> None:
    name = create(custom, api.VM_MIGRATION, MIGRATION)["metadata"]["name"]
    message = rejection(
        lambda: custom.patch_namespaced_custom_object_status(
            api.GROUP,
            api.VERSION,
            NAMESPACE,
            api.VMMIGRATIONS,
            name,
            {"status": {"phase": "Exploded"}},
        )
    )
    assert "status.phase" in message


def test_descriptions_reach_the_published_openapi(control_plane: ControlPlane) -> None:
    """What `kubectl explain` reads: the served OpenAPI v3 document of the group."""
    document = raw_get(control_plane, f"/openapi/v3/apis/{api.GROUP}/{api.VERSION}")
    schemas = document["components"]["schemas"]
    (drain,) = [s for key, s in schemas.items() if key.endswith(".NodeDrain")]
    local_disks = drain["properties"]["spec"]["properties"]["localDisks"]
    assert "Default skip" in local_disks["description"]
