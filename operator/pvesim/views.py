"""Model objects rendered as PVE's API returns them."""

from __future__ import annotations

from typing import Any

from pvesim.model import VM, Cluster, Node
from pvesim.model.params import GiB
from pvesim.model.tasklog import Task, split_token

HOST_OVERHEAD = 4 * GiB  # memory the host itself uses: assumption
PVE_VERSIONS = {8: ("8.4.1", "8.4", "2a5fa54a8503f96d"), 9: ("9.0.3", "9.0", "025864202ebb6109")}


def version(cluster: Cluster) -> dict[str, Any]:
    full, release, repoid = PVE_VERSIONS[cluster.params.pve_version]
    return {"version": full, "release": release, "repoid": repoid}


def uptime(cluster: Cluster) -> int:
    return int(cluster.now - cluster.params.start_time) + 86_400


def resident_memory(vm: VM) -> int:
    """A stopped guest has no QEMU process: PVE's vmstatus reports `mem` 0 for it."""
    return vm.mem if vm.running else 0


def node_totals(node: Node, resident: int, load: float) -> tuple[int, float]:
    """Memory used and CPU share of a node from its guests' resident memory and CPU load."""
    return HOST_OVERHEAD + resident, round(min(1.0, load / node.cpus), 4)


def node_usage(cluster: Cluster, node: Node) -> tuple[int, float]:
    """`node_totals` of one node, summed over its guests."""
    guests = [v for v in cluster.vms.values() if v.node == node.name]
    resident = sum(resident_memory(v) for v in guests)
    return node_totals(node, resident, sum(v.cpu_load * v.cpus for v in guests if v.running))


def node_entry(cluster: Cluster, node: Node, used: int, cpu: float) -> dict[str, Any]:
    """One row of `/nodes` and `/cluster/resources` (type node)."""
    entry: dict[str, Any] = {
        "id": f"node/{node.name}",
        "type": "node",
        "node": node.name,
        "status": "online" if node.online else "offline",
        "level": "",
    }
    if node.online:
        entry |= {
            "maxmem": node.maxmem,
            "mem": used,
            "maxcpu": node.cpus,
            "cpu": cpu,
            "uptime": uptime(cluster),
            "maxdisk": 100 * GiB,
            "disk": 12 * GiB,
            "cgroup-mode": 2,
        }
    return entry


def vm_entry(cluster: Cluster, vm: VM, *, resources: bool) -> dict[str, Any]:
    """A row of `/cluster/resources` (type qemu) or `/nodes/{n}/qemu`."""
    entry: dict[str, Any] = {
        "vmid": vm.vmid,
        "name": vm.name,
        "status": "running" if vm.running else "stopped",
        "maxmem": vm.maxmem,
        "mem": resident_memory(vm),
        "cpus": vm.cpus,
        "cpu": round(vm.cpu_load, 4) if vm.running else 0,
        "uptime": uptime(cluster) if vm.running else 0,
        "maxdisk": sum(d.size for d in vm.disks),
        "disk": 0,
        "netin": 0,
        "netout": 0,
        "diskread": 0,
        "diskwrite": 0,
    }
    if vm.tags:
        entry["tags"] = ";".join(vm.tags)
    if vm.template:
        entry["template"] = 1
    if vm.lock:
        entry["lock"] = vm.lock
    if resources:
        entry |= {"id": f"qemu/{vm.vmid}", "type": "qemu", "node": vm.node, "maxcpu": vm.cpus}
        # pve-manager PVE/API2Tools.pm extract_vm_stats: `template` from the RRD, 0 or 1
        # (QemuServer.pm vmstatus, behind /nodes/{node}/qemu, sets it only for templates)
        entry["template"] = int(vm.template)
        entry.pop("cpus")
        if vm.pool:
            entry["pool"] = vm.pool
        if (hastate := cluster.ha.hastate(vm)) is not None:
            entry["hastate"] = hastate
    elif vm.running:
        entry["pid"] = 10_000 + vm.vmid
    return entry


def cluster_resources(cluster: Cluster, kind: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    mem: dict[str, int] = {}
    load: dict[str, float] = {}
    for vm in cluster.vms.values():
        mem[vm.node] = mem.get(vm.node, 0) + resident_memory(vm)
        if vm.running:
            load[vm.node] = load.get(vm.node, 0.0) + vm.cpu_load * vm.cpus
    if kind in (None, "node"):
        for node in cluster.nodes.values():
            used, cpu = node_totals(node, mem.get(node.name, 0), load.get(node.name, 0.0))
            rows.append(node_entry(cluster, node, used, cpu))
    if kind in (None, "vm"):
        rows.extend(vm_entry(cluster, vm, resources=True) for vm in cluster.vms.values())
    if kind in (None, "storage"):
        for node in cluster.nodes.values():
            rows.extend(storage_entry(node, s, resources=True) for s in node.storages)
    if kind in (None, "pool"):
        rows.extend({"id": f"/pool/{p}", "type": "pool", "pool": p} for p in pools(cluster))
    return rows


def storage_entry(node: Node, storage: str, *, resources: bool) -> dict[str, Any]:
    shared = storage == "ceph"
    total = 4096 * GiB if shared else 512 * GiB
    entry: dict[str, Any] = {
        "storage": storage,
        "shared": int(shared),
        "content": "images,rootdir" if storage != "local" else "iso,vztmpl,backup",
        "type": {"ceph": "rbd", "local-lvm": "lvmthin", "local": "dir"}[storage],
        "total": total,
        "used": total // 4,
        "avail": total - total // 4,
        "active": 1,
        "enabled": 1,
    }
    if resources:
        return {
            "id": f"storage/{node.name}/{storage}",
            "type": "storage",
            "node": node.name,
            "storage": storage,
            "status": "available" if node.online else "unknown",
            "shared": int(shared),
            "maxdisk": total,
            "disk": total // 4,
            "plugintype": entry["type"],
            "content": entry["content"],
        }
    return entry


def pools(cluster: Cluster) -> list[str]:
    return sorted({v.pool for v in cluster.vms.values() if v.pool})


def node_status(cluster: Cluster, node: Node) -> dict[str, Any]:
    used, cpu = node_usage(cluster, node)
    full, _, _ = PVE_VERSIONS[cluster.params.pve_version]
    return {
        "memory": {"total": node.maxmem, "used": used, "free": node.maxmem - used},
        "swap": {"total": 8 * GiB, "used": 0, "free": 8 * GiB},
        "rootfs": {"total": 100 * GiB, "used": 12 * GiB, "free": 88 * GiB, "avail": 88 * GiB},
        "cpu": cpu,
        "wait": 0.0,
        "cpuinfo": {
            "cpus": node.cpus,
            "cores": node.cpus // 2,
            "sockets": 2,
            "model": "pvesim virtual CPU",
            "mhz": "2400.000",
        },
        "loadavg": ["1.00", "1.00", "1.00"],
        "uptime": uptime(cluster),
        "pveversion": f"pve-manager/{full}/{PVE_VERSIONS[cluster.params.pve_version][2]}",
        "kversion": "Linux 6.8.12-pve #1 SMP PREEMPT_DYNAMIC",
        "idle": 0,
    }


def vm_status(cluster: Cluster, vm: VM) -> dict[str, Any]:
    entry = vm_entry(cluster, vm, resources=False)
    entry["qmpstatus"] = entry["status"]
    entry["ha"] = cluster.ha.service_status(vm)
    return entry


# The Administrator role: every privilege of pve-access-control's `$privgroups`
# (src/PVE/AccessControl.pm, PVE 8); the token carries it on `/`, propagated.
ADMIN_PRIVILEGES = (
    "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate",
    "Datastore.Audit", "Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use",
    "Permissions.Modify", "Pool.Allocate", "Pool.Audit", "Realm.Allocate", "Realm.AllocateUser",
    "SDN.Allocate", "SDN.Audit", "SDN.Use", "Sys.AccessNetwork", "Sys.Audit", "Sys.Console",
    "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog", "User.Modify", "VM.Allocate",
    "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU",
    "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory",
    "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.Migrate", "VM.Monitor",
    "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback",
)  # fmt: skip
# RPCEnvironment::get_effective_permissions: these top-level paths, plus ACL paths (only `/`
# here) and `/vms/{vmid}` of pool members (pve-access-control src/PVE/RPCEnvironment.pm).
_PERMISSION_PATHS = (
    "/",
    "/access",
    "/access/groups",
    "/nodes",
    "/pool",
    "/sdn",
    "/storage",
    "/vms",
)


def permissions(cluster: Cluster, path: str | None) -> dict[str, dict[str, int]]:
    """`GET /access/permissions`: path -> {privilege: propagate}."""
    privileges = dict.fromkeys(ADMIN_PRIVILEGES, 1)
    if path is not None:
        return {path: dict(privileges)}
    paths = list(_PERMISSION_PATHS)
    paths += [f"/vms/{vm.vmid}" for vm in cluster.vms.values() if vm.pool]
    return {p: dict(privileges) for p in paths}


# PVE::RRD::create_rrd_data (pve-cluster src/PVE/RRD.pm): `hour` is 70 rows of 60 s.
RRD_STEPS = {"hour": 60, "day": 1800, "week": 10_800, "month": 43_200, "year": 604_800}
RRD_ROWS = 70
_PRESSURE_KEYS = (
    "pressurecpusome", "pressurecpufull", "pressureiosome", "pressureiofull",
    "pressurememorysome", "pressurememoryfull",
)  # fmt: skip


def rrd_rows(cluster: Cluster, timeframe: str, sample: dict[str, float]) -> list[dict[str, Any]]:
    """A flat history: pvesim keeps no past, so every row repeats the current sample.

    PVE 9 adds the PSI pressure series (all zero here: the model has no contention)."""
    step = RRD_STEPS[timeframe]
    end = step * int(cluster.now // step)
    if cluster.params.pve_version >= 9:
        sample = sample | dict.fromkeys(_PRESSURE_KEYS, 0.0)
    return [{"time": end - step * (RRD_ROWS - i)} | sample for i in range(RRD_ROWS)]


def node_rrd_sample(cluster: Cluster, node: Node) -> dict[str, float]:
    """The fields of PVE's `pve2-node` RRD."""
    used, cpu = node_usage(cluster, node)
    return {
        "cpu": cpu,
        "maxcpu": node.cpus,
        "iowait": 0.0,
        "loadavg": 1.0,
        "memtotal": node.maxmem,
        "memused": used,
        "swaptotal": 8 * GiB,
        "swapused": 0,
        "roottotal": 100 * GiB,
        "rootused": 12 * GiB,
        "netin": 0,
        "netout": 0,
    }


def vm_rrd_sample(vm: VM) -> dict[str, float]:
    """The fields of PVE's `pve2-vm` RRD."""
    return {
        "cpu": round(vm.cpu_load, 4) if vm.running else 0.0,
        "maxcpu": vm.cpus,
        "mem": resident_memory(vm),
        "maxmem": vm.maxmem,
        "disk": 0,
        "maxdisk": sum(d.size for d in vm.disks),
        "netin": 0,
        "netout": 0,
        "diskread": 0,
        "diskwrite": 0,
    }


def cluster_task_row(task: Task) -> dict[str, Any]:
    """A row of `/cluster/tasks` (pve-manager API2/Cluster.pm `tasks`): the broadcast list of
    active and recent tasks, token owners split; a running task has no `status` yet."""
    row = task.list_row()
    if task.running:
        row.pop("saved")
        row.pop("status")
    return row | split_token(task.upid.user)
