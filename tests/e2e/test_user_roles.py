"""The chart's aggregated ClusterRoles on a real control plane: kube-controller-manager merges
them into the built-in view/edit/admin roles, so a user holding only `edit` in a namespace
drains a node with `kubectl proxmigrate` and reads its status, while `view` only reads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from proxmigrate.api.constants import GROUP, NODEDRAINS, PROXMOXCLUSTERS, VERSION
from proxmigrate.kubectl import cli
from proxmigrate.kubectl.errors import EXIT_OK
from tests.e2e.chart_env import apply, render, server_version, service_account_kubeconfig
from tests.support.controlplane import ControlPlane
from tests.support.devenv import ensure_namespace, wait_for

NAMESPACE = "e2e-roles"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
CLUSTER = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "ProxmoxCluster",
    "metadata": {"name": "lab"},
    "spec": {"endpoints": ["pve1:8006"], "credentialsSecretRef": {"name": "lab-token"}},
}


def user(control_plane: ControlPlane, name: str, role: str, tmp_path: Path) -> Path:
    """A ServiceAccount bound to the built-in ClusterRole `role` in NAMESPACE only; its
    kubeconfig carries nothing but that account's token."""
    admin = control_plane.api_client()
    client.CoreV1Api(admin).create_namespaced_service_account(
        NAMESPACE, {"metadata": {"name": name}}
    )
    client.RbacAuthorizationV1Api(admin).create_namespaced_role_binding(
        NAMESPACE,
        {
            "metadata": {"name": f"{name}-{role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
    )
    return service_account_kubeconfig(control_plane, NAMESPACE, name, tmp_path / f"{name}.yaml")


def allowed(kubeconfig: Path, verb: str, resource: str) -> bool:
    """What the apiserver's authorizer answers this user (SelfSubjectAccessReview)."""
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "group": GROUP,
                    "resource": resource,
                    "verb": verb,
                    "namespace": NAMESPACE,
                }
            }
        }
    )
    return bool(review.status.allowed)


def chart_roles_present(admin: client.ApiClient) -> bool:
    """Whether ClusterRoles aggregating rules for our API group exist (test_install_docs
    installs the chart into the shared control plane before this test runs)."""
    return any(
        any(label.startswith(AGGREGATE_TO) for label in role.metadata.labels or {})
        and any(GROUP in (rule.api_groups or []) for rule in role.rules or [])
        for role in client.RbacAuthorizationV1Api(admin).list_cluster_role().items
    )


def plugin(kubeconfig: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main([*argv, "-n", NAMESPACE, "--kubeconfig", str(kubeconfig)], out=out)
    return code, out.getvalue()


def create_as(kubeconfig: Path, plural: str, body: dict[str, Any]) -> None:
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, plural, body
    )


def drain_body(node: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeDrain",
        "metadata": {"name": f"drain-{node}"},
        "spec": {"clusterRef": {"name": "lab"}, "nodeName": node},
    }


def test_edit_drains_with_the_plugin_and_view_only_reads(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    admin = control_plane.api_client()
    ensure_namespace(admin, NAMESPACE)
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PROXMOXCLUSTERS, CLUSTER
    )
    editor = user(control_plane, "alice", "edit", tmp_path)
    viewer = user(control_plane, "bob", "view", tmp_path)
    if not chart_roles_present(admin):  # the shared control plane may have them already
        assert not allowed(editor, "create", NODEDRAINS)  # built-in edit knows nothing of ours

    roles = [
        m
        for m in render(server_version(admin), NAMESPACE)
        if m["kind"] == "ClusterRole"
        and any(label.startswith(AGGREGATE_TO) for label in m["metadata"]["labels"])
    ]
    assert len(roles) == 3
    for role in roles:
        apply(admin, role)
    wait_for(
        lambda: allowed(editor, "create", NODEDRAINS) and allowed(viewer, "list", NODEDRAINS),
        timeout=30,
        message="kube-controller-manager to aggregate the chart's roles into edit and view",
    )

    code, output = plugin(editor, "drain", "pve1")
    assert code == EXIT_OK, output
    code, status = plugin(editor, "status")
    assert code == EXIT_OK, status
    code, viewed = plugin(viewer, "status")
    assert code == EXIT_OK, viewed
    assert "drain-pve1" in status and "pve1" in status and "drain-pve1" in viewed

    assert not allowed(editor, "create", PROXMOXCLUSTERS)  # connecting a cluster is admin's
    assert not allowed(editor, "patch", f"{NODEDRAINS}/status")  # status is the operator's
    assert allowed(editor, "delete", "vmmigrations")
    with pytest.raises(ApiException) as refused:
        create_as(viewer, NODEDRAINS, drain_body("pve2"))
    assert refused.value.status == 403
