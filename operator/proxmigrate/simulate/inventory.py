"""Inventories for a simulated drain: read from the model, or turned into one.

The operator sees a cluster through `GET /cluster/resources`; local disks and devices come
from the per-VM precondition check. Reading the model through pvesim's own views keeps the
simulated drain's input identical to what the operator would parse from pvesim over HTTPS.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxmigrate.inventory import Inventory
from proxmigrate.planning import transfer_bytes
from proxmigrate.pve.resources import parse_inventory
from pvesim.model import Cluster
from pvesim.views import cluster_resources

GIB = 1 << 30


def inventory_from_model(cluster: Cluster) -> Inventory:
    """What the operator knows after one inventory read and the precondition checks."""
    rows = [*cluster_resources(cluster, "node"), *cluster_resources(cluster, "vm")]
    parsed = parse_inventory(rows, taken_at=cluster.now)
    vms = []
    for info in parsed.vms:
        vm = cluster.vms[info.vmid]
        vms.append(
            replace(
                info,
                local_disks=tuple(disk.volid for disk in vm.local_disks),
                local_devices=tuple(vm.local_devices),
            )
        )
    return Inventory(nodes=parsed.nodes, vms=tuple(vms), taken_at=parsed.taken_at)


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
        disks += [
            {"key": f"scsi{index}", "storage": "local-lvm"}
            for index, _volume in enumerate(vm.local_disks, start=1)
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
