"""Helpers for operator end-to-end tests: pacing scaled to pvesim's clock, status reads."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from proxmigrate.api.constants import GROUP, VERSION
from tests.support.devenv import OperatorProcess, wait_for

TIME_SCALE = 20.0  # pvesim runs 20 simulated seconds per real second in these tests


def scaled_policy(**overrides: Any) -> dict[str, Any]:
    """The default migration policy with its pacing durations in pvesim's scaled time."""
    policy: dict[str, Any] = {
        "handshakePacing": {
            "handshakeSeconds": round(0.25 / TIME_SCALE, 4),
            "startSpreadSeconds": 5.0 / TIME_SCALE,
            "endSpreadSeconds": 2.0 / TIME_SCALE,
        },
        "retry": {"backoffSeconds": 1, "maxBackoffSeconds": 5},
    }
    policy.update(overrides)
    return policy


def get(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    )


def items(api: client.ApiClient, namespace: str, plural: str) -> list[dict[str, Any]]:
    answer = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural
    )
    return list(answer["items"])


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for entry in obj.get("status", {}).get("conditions", []):
        if entry.get("type") == type_:
            return dict(entry)
    return None


def create(api: client.ApiClient, namespace: str, plural: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )


def vmmigration(name: str, vmid: int, target: str, cluster: str = "lab") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VMMigration",
        "metadata": {"name": name},
        "spec": {"clusterRef": {"name": cluster}, "vmid": vmid, "target": target},
    }


def wait_cluster_decided(
    api: client.ApiClient, namespace: str, operator: OperatorProcess, name: str = "lab"
) -> dict[str, Any]:
    """The ProxmoxCluster's Ready condition once the operator has decided it (not Unknown)."""
    return dict(
        wait_for(
            lambda: (
                (c := condition(get(api, namespace, "proxmoxclusters", name), "Ready"))
                and c["status"] != "Unknown"
                and c
            ),
            timeout=60,
            message=f"ProxmoxCluster {name} Ready to be decided\n{operator.tail()}",
        )
    )
