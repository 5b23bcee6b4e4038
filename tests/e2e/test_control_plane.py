"""The foundation: our CRDs live in a real kube-apiserver, which validates and watches them."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.support.controlplane import K8S_VERSION, ControlPlane

GROUP, VERSION = "proxmigrate.dev", "v1alpha1"


def _migration(name: str, vmid: int = 120, target: str = "pve2") -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VMMigration",
        "metadata": {"name": name},
        "spec": {"clusterRef": {"name": "lab"}, "vmid": vmid, "target": target},
    }


def test_apiserver_reports_pinned_version(control_plane: ControlPlane) -> None:
    info = client.VersionApi(control_plane.api_client()).get_code()
    assert info.git_version == K8S_VERSION


def test_custom_resource_round_trip_with_defaults(control_plane: ControlPlane) -> None:
    api = client.CustomObjectsApi(control_plane.api_client())
    api.create_namespaced_custom_object(
        GROUP, VERSION, "default", "vmmigrations", _migration("roundtrip")
    )
    stored = api.get_namespaced_custom_object(
        GROUP, VERSION, "default", "vmmigrations", "roundtrip"
    )
    assert stored["spec"]["vmid"] == 120
    assert stored["spec"]["online"] is True  # schema default applied by the server
    assert stored["spec"]["priority"] == 0


def test_watch_sees_creation(control_plane: ControlPlane) -> None:
    api = client.CustomObjectsApi(control_plane.api_client())
    seen: list[str] = []
    ready = threading.Event()

    def watch_events() -> None:
        stream = watch.Watch()
        ready.set()
        for event in stream.stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            "vmmigrations",
            field_selector="metadata.name=watched",
            timeout_seconds=20,
        ):
            seen.append(event["type"])
            stream.stop()

    thread = threading.Thread(target=watch_events)
    thread.start()
    ready.wait()
    api.create_namespaced_custom_object(
        GROUP, VERSION, "default", "vmmigrations", _migration("watched", vmid=121)
    )
    thread.join(timeout=30)
    assert seen == ["ADDED"]


def test_schema_rejects_invalid_spec_readably(control_plane: ControlPlane) -> None:
    api = client.CustomObjectsApi(control_plane.api_client())
    with pytest.raises(ApiException) as error:
        api.create_namespaced_custom_object(
            GROUP, VERSION, "default", "vmmigrations", _migration("bad", vmid=5)
        )
    assert error.value.status == 422
    assert "spec.vmid" in error.value.body
