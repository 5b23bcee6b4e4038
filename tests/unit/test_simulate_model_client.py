"""`ModelClient`: the operator's PVE client answered by pvesim's model in-process."""

from __future__ import annotations

from typing import Any

import pytest

from proxmigrate.pve.errors import PveApiError
from proxmigrate.pve.upid import parse_upid
from proxmigrate.simulate.model import cluster_from_config
from proxmigrate.simulate.model_client import ModelClient

CONFIG: dict[str, Any] = {
    "nodes": [{"name": name, "memory_gib": 64} for name in ("a", "b")],
    "vms": [
        {"vmid": 100, "node": "a", "memory_gib": 4, "used_gib": 2},
        {"vmid": 101, "node": "a", "memory_gib": 4, "used_gib": 2, "lock": "backup"},
        {"vmid": 102, "node": "a", "memory_gib": 4, "used_gib": 2, "ha": True},
    ],
}


def client_and_model() -> tuple[ModelClient, Any]:
    cluster = cluster_from_config(CONFIG, seed=1)
    return ModelClient(cluster, clock=lambda: cluster.now), cluster


async def test_a_migration_is_started_tracked_and_logged_as_over_https() -> None:
    client, cluster = client_and_model()
    assert (await client.cluster_options()).type == "secure"
    inventory = await client.inventory()
    assert inventory.taken_at == cluster.now and inventory.vm(100).node == "a"  # type: ignore[union-attr]

    upid = await client.migrate("a", 100, "b", online=True)
    assert parse_upid(upid).type == "qmigrate" and parse_upid(upid).node == "a"
    [row] = await client.tasks("a", since=int(cluster.now) - 1)
    assert row["upid"] == upid and "endtime" not in row  # still running
    cluster.run_until_idle()
    [row] = await client.tasks("a", since=int(cluster.now) - 3600, typefilter="qmigrate")
    assert row["status"] == "OK"
    lines = await client.task_log("a", upid)
    assert lines[-1] == "TASK OK" and len(lines) == len(cluster.tasks[upid].lines)
    assert (await client.inventory()).vm(100).node == "b"  # type: ignore[union-attr]

    assert client.requests == {
        "GET /cluster/options": 1,
        "GET /cluster/resources": 2,
        "POST /nodes/{node}/qemu/{vmid}/migrate": 1,
        "GET /nodes/{node}/tasks": 2,
        "GET /nodes/{node}/tasks/{upid}/log": 1,
    }
    assert client.model_cpu_seconds >= 0


async def test_refusals_arrive_as_the_transport_raises_them() -> None:
    client, _ = client_and_model()
    with pytest.raises(PveApiError) as locked:
        await client.migrate("a", 101, "b")
    assert locked.value.status == 500 and "VM is locked (backup)" in locked.value.message
    # an API token may not choose the transport: PVE answers 400 per parameter
    with pytest.raises(PveApiError) as token:
        await client.client.transport.request(
            "POST", "nodes/a/qemu/100/migrate", {"target": "b", "migration_type": "secure"}
        )
    assert token.value.status == 400
    assert token.value.errors == {"migration_type": "Only root may use this option."}
    assert client.requests["POST /nodes/{node}/qemu/{vmid}/migrate"] == 2


async def test_an_ha_request_returns_a_hamigrate_and_its_qmigrate_shows_up_later() -> None:
    client, cluster = client_and_model()
    since = int(cluster.now)
    assert parse_upid(await client.migrate("a", 102, "b")).type == "hamigrate"
    assert await client.find_migration_task(102, "a", since) is None
    cluster.advance_to(cluster.now + 60)  # the HA manager's loops pick the request up
    upid = await client.find_migration_task(102, "a", since)
    assert upid is not None and parse_upid(upid).id == "102"
