"""Uninstall cannot hang: with the operator gone, deleted objects wait on its finalizer until
`kubectl proxmigrate release-finalizers` removes it; then the CRDs delete. Its own control plane,
since deleting the CRDs would break the session's other tests."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from proxmigrate.api.constants import (
    API_VERSION,
    FINALIZER,
    GROUP,
    NODEDRAINS,
    PROXMOXCLUSTERS,
    RESOURCES,
    VERSION,
    VMMIGRATIONS,
    VMPLACEMENTS,
)
from proxmigrate.kubectl import cli
from proxmigrate.kubectl.errors import EXIT_ERROR, EXIT_OK
from tests.support.controlplane import KOPF_PEERING_CRDS, REPO_ROOT, ControlPlane
from tests.support.devenv import OperatorProcess, ensure_namespace, wait_for

NAMESPACE = "e2e-uninstall"
PEERING = "proxmigrate"
PEER_LIFETIME = 5  # seconds: a killed replica counts as running until then
CLUSTER_REF = {"clusterRef": {"name": "lab"}}
OBJECTS: dict[str, dict[str, Any]] = {
    PROXMOXCLUSTERS: {
        "kind": "ProxmoxCluster",
        "spec": {"endpoints": ["127.0.0.1:9"], "credentialsSecretRef": {"name": "absent"}},
    },
    NODEDRAINS: {"kind": "NodeDrain", "spec": {**CLUSTER_REF, "nodeName": "pve1"}},
    VMPLACEMENTS: {"kind": "VMPlacement", "spec": {**CLUSTER_REF, "vmid": 101, "node": "pve2"}},
    VMMIGRATIONS: {"kind": "VMMigration", "spec": {**CLUSTER_REF, "vmid": 101, "target": "pve2"}},
}


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(
        crds=[*sorted((REPO_ROOT / "crds").glob("*.yaml")), KOPF_PEERING_CRDS]
    ) as plane:
        yield plane


def read(custom: client.CustomObjectsApi, plural: str) -> dict[str, Any] | None:
    try:
        return dict(custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, "lab"))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def release(plane: ControlPlane, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    argv = ["release-finalizers", "-n", NAMESPACE, "--kubeconfig", str(plane.kubeconfig)]
    return cli.main([*argv, *extra], out=out), out.getvalue()


def test_release_finalizers_unblocks_deletion_and_crd_removal(
    plane: ControlPlane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = plane.api_client()
    custom = client.CustomObjectsApi(api)
    ensure_namespace(api, NAMESPACE)
    custom.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        NAMESPACE,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    for plural, body in OBJECTS.items():
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            plural,
            {"apiVersion": API_VERSION, "metadata": {"name": "lab"}, **body},
        )
    operator = OperatorProcess(
        plane.kubeconfig,
        tmp_path / "operator.log",
        namespace=NAMESPACE,
        peering=PEERING,
        peering_lifetime_seconds=PEER_LIFETIME,
    )
    with operator:
        for plural in OBJECTS:
            wait_for(
                lambda plural=plural: (
                    FINALIZER
                    in ((read(custom, plural) or {}).get("metadata", {}).get("finalizers") or [])
                ),
                timeout=15,
                interval=0.2,
                message=f"{plural}/lab to get {FINALIZER}\n{operator.tail()}",
            )
        # While a replica is alive in the peering object, the command refuses and changes nothing.
        code, _ = release(plane, "--yes")
        assert code == EXIT_ERROR
        assert "the operator is running (KopfPeering e2e-uninstall/proxmigrate:" in (
            capsys.readouterr().err
        )
        assert all(FINALIZER in read(custom, p)["metadata"]["finalizers"] for p in OBJECTS)  # type: ignore[index]
        # Gone as by a crash: its peering entry stays, and counts until its lifetime passes.
        operator.kill()
        killed = time.monotonic()

    # A deleted drain and migration wait on the finalizer.
    for plural in (NODEDRAINS, VMMIGRATIONS):
        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, "lab")
    time.sleep(0.5)
    for plural in (NODEDRAINS, VMMIGRATIONS):
        stuck = read(custom, plural)
        assert stuck is not None and stuck["metadata"].get("deletionTimestamp")

    # Without --yes and no terminal: once the dead replica's lifetime has passed, a list of
    # what would change, and nothing changed.
    code, listing = wait_for(
        lambda: (answer := release(plane)) and "would be removed" in answer[1] and answer,
        timeout=PEER_LIFETIME + 5,
        interval=0.2,
        message="the killed replica's peering entry to expire",
    )
    # kopf touches its entry every second with this lifetime (peering.keepalive)
    assert time.monotonic() - killed > PEER_LIFETIME - 2  # refused until then
    assert code == EXIT_ERROR and "nodedrain.proxmigrate.dev/lab" in listing
    assert "pass --yes to release 4 finalizers" in capsys.readouterr().err
    assert read(custom, NODEDRAINS) is not None

    # Deleting the CRDs deletes every object first, so it waits too.
    crds = client.ApiextensionsV1Api(api)
    for resource in RESOURCES:
        crds.delete_custom_resource_definition(resource.crd_name)

    def crds_left() -> set[str]:
        names = {c.metadata.name for c in crds.list_custom_resource_definition().items}
        return names & {r.crd_name for r in RESOURCES}

    wait_for(
        lambda: all(
            (read(custom, p) or {}).get("metadata", {}).get("deletionTimestamp") for p in OBJECTS
        ),
        timeout=10,
        message="the CRDs' deletion to delete every object",
    )
    time.sleep(1)
    # the CRDs whose objects hold our finalizer wait; an empty one (NodeMaintenance) goes
    assert crds_left() == {r.crd_name for r in RESOURCES if r.plural in OBJECTS}
    assert all(read(custom, p) is not None for p in OBJECTS)

    code, report = release(plane, "--yes")
    assert code == EXIT_OK, capsys.readouterr().err
    lines = report.splitlines()
    assert len(lines) == 4, report
    assert all(
        line.endswith(f"finalizer {FINALIZER} removed; it was being deleted: gone")
        for line in lines
    ), report
    assert {line.split()[0] for line in lines} == {
        f"{OBJECTS[p]['kind'].lower()}.{GROUP}/lab" for p in OBJECTS
    }
    assert all(read(custom, p) is None for p in OBJECTS)
    wait_for(lambda: not crds_left(), timeout=20, message="the CRDs to be deleted")
