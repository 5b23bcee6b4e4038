"""Helpers for the chart's end-to-end test: render it, apply what it renders, log in as its
ServiceAccount."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError

from tests.support.controlplane import ControlPlane
from tests.unit.test_chart import CHART, RELEASE, cached_tool

Manifest = dict[str, Any]
FIELD_MANAGER = "proxmigrate-chart-e2e"
PROMETHEUS_OPERATOR_CRDS = Path(__file__).parent / "fixtures" / "prometheus-operator-crds.yaml"


def server_version(api: client.ApiClient) -> str:
    """The kube-apiserver's version (e.g. v1.35.4), for `helm template --kube-version`."""
    return str(client.VersionApi(api).get_code().git_version)


def render(
    kube_version: str,
    namespace: str,
    *values_files: Path,
    sets: tuple[str, ...] = (),
    release: str = RELEASE,
    options: tuple[str, ...] = (),
) -> list[Manifest]:
    """Every object `helm install` would create, CRDs included; `options` are more of
    helm's (e.g. `--set-file`)."""
    argv = [str(cached_tool("helm")), "template", release, str(CHART), "--include-crds"]
    argv += ["-n", namespace, "--kube-version", kube_version, *options]
    for values in values_files:
        argv += ["-f", str(values)]
    for assignment in sets:
        argv += ["--set", assignment]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def describe(manifest: Manifest) -> str:
    metadata = manifest["metadata"]
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{manifest['kind']} {where}{metadata['name']}"


def strict_dry_run(api: client.ApiClient, manifest: Manifest) -> None:
    """Send an object as `helm install` would, with `dryRun=All&fieldValidation=Strict`.

    An object that already exists (the CRDs the suite applied) is dry-run as an update of
    the live one. Raises `DynamicApiError` when the apiserver refuses it.
    """
    dynamic = DynamicClient(api)
    resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    namespace = manifest["metadata"].get("namespace")
    try:
        dynamic.create(resource, body=manifest, namespace=namespace, **_strict_dry_run_params())
    except ConflictError:
        live = dynamic.get(resource, name=manifest["metadata"]["name"], namespace=namespace)
        update = copy.deepcopy(manifest)
        update["metadata"]["resourceVersion"] = live.metadata.resourceVersion
        dynamic.replace(resource, body=update, namespace=namespace, **_strict_dry_run_params())


def _strict_dry_run_params() -> dict[str, Any]:
    # A fresh list each call: DynamicClient.request appends to the query_params it is given.
    return {"dry_run": "All", "query_params": [("fieldValidation", "Strict")]}


def apply(api: client.ApiClient, manifest: Manifest) -> None:
    """Create or update an object for real (server-side apply, idempotent)."""
    dynamic = DynamicClient(api)
    resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    dynamic.server_side_apply(
        resource,
        body=manifest,
        namespace=manifest["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )


def service_account_kubeconfig(
    control_plane: ControlPlane, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates with a TokenRequest token of `service_account` only.

    The apiserver signs the token itself, so no controller-manager is needed.
    """
    admin = control_plane.api_client()
    request = client.CoreV1Api(admin).create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    admin_config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin_config["clusters"],
        "users": [{"name": service_account, "user": {"token": request.status.token}}],
        "contexts": [
            {
                "name": service_account,
                "context": {
                    "cluster": admin_config["clusters"][0]["name"],
                    "user": service_account,
                    "namespace": namespace,
                },
            }
        ],
        "current-context": service_account,
    }
    path.write_text(yaml.safe_dump(config))
    return path
