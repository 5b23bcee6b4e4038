"""Inventories for a simulated drain, read as the operator reads them, or turned into a model.

There is one inventory path: `ClusterRuntime.refresh_inventory`, `GET /cluster/resources`
plus PVE's precondition check for the guests of the drained nodes (their local disks and
devices). A library drain reads pvesim's model through it, `simulate --endpoint` a live
PVE API; both see what the NodeDrain controller sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.api.enums import AuthMethod
from proxmigrate.inventory import Inventory
from proxmigrate.planning import transfer_bytes
from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.runtime.cluster import ClusterRuntime
from proxmigrate.simulate.status_log import StatusLog

GIB = 1 << 30


async def drained_inventory(runtime: ClusterRuntime, nodes: Collection[str]) -> Inventory:
    """What a NodeDrain of `nodes` plans from (controllers/drain_requests.py
    `with_local_resources`)."""
    return await runtime.refresh_inventory(local_for=lambda vm: vm.node in nodes)


def read_inventory(client: AsyncPveClient, nodes: Collection[str]) -> Inventory:
    """`drained_inventory` through a runtime that only reads (`simulate --endpoint`)."""

    async def read() -> Inventory:
        runtime = ClusterRuntime(
            "simulate", "read", client, MigrationPolicySpec(), AuthMethod.TOKEN, StatusLog()
        )
        try:
            return await drained_inventory(runtime, nodes)
        finally:
            await runtime.close()

    return asyncio.run(read())


def config_from_inventory(
    inventory: Inventory,
    *,
    nic_gbit: float,
    max_startups: str,
    dirty_mib_s: float = 10.0,
    migration: str = "type=secure",
) -> dict[str, Any]:
    """A pvesim cluster config (docs/pvesim.md) for an inventory read from a live PVE API.

    The API does not say what the model needs beyond the inventory: link speed, sshd
    settings and how fast guests dirty memory are the caller's assumptions. Guests whose
    usage is unknown are assumed to use all their memory, as the planner does.
    """
    nodes = [
        {
            "name": node.name,
            "memory_gib": max(node.max_memory, node.used_memory + GIB) / GIB,
            "cpus": max(1, node.max_cpu),
            "nic_gbit": nic_gbit,
            "max_startups": max_startups,
            "online": node.online,
        }
        for node in inventory.nodes
    ]
    vms = []
    for vm in inventory.vms:
        used = transfer_bytes(vm)
        disks = [{"key": "scsi0", "storage": "ceph", "size_gib": 32}]
        volumes = (volid.partition(":") for volid in vm.local_disks)
        disks += [
            {"key": f"scsi{index}", "storage": storage, "volname": volname}
            for index, (storage, _, volname) in enumerate(volumes, start=1)
        ]
        vms.append(
            {
                "vmid": vm.vmid,
                "name": vm.name,
                "node": vm.node,
                "memory_gib": vm.max_memory / GIB,
                "used_gib": used / GIB,
                "running": vm.running,
                "dirty_mib_s": dirty_mib_s,
                "cpus": vm.cpus,
                "disks": disks,
                "local_devices": list(vm.local_devices),
                "tags": sorted(vm.tags),
                "pool": vm.pool,
                "ha": vm.ha_managed,
                "lock": vm.lock,
                "template": vm.template,
            }
        )
    return {
        "shared_storages": ["ceph"],
        "datacenter": {"migration": migration},
        "nodes": nodes,
        "vms": vms,
    }
