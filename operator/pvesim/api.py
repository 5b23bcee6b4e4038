"""`/api2/json` routes other than tasks: what each answers, from the model.

Matching and PVE's checks before a handler runs are `pvesim.routing`'s; the task routes are
`pvesim.task_routes`.
"""

from __future__ import annotations

import re
from typing import Any

from pvesim import permissions, task_routes, views
from pvesim.model import ROOT, ApiError
from pvesim.routing import Request, Router


def _vmid(value: str) -> int:
    """A path's vmid (the schema's pve-vmid check has passed)."""
    return int(value)


router = Router()


@router.add("GET", "version")
def get_version(req: Request) -> Any:
    return views.version(req.cluster)


@router.add("GET", "access/permissions")
def access_permissions(req: Request) -> Any:
    """What the caller may do. pve-access-control API2/AccessControl.pm `permissions`: another
    user's (not the caller's own token's) needs Sys.Audit on /access."""
    userid = req.params.get("userid", req.user)
    if userid != req.user and userid.partition("!")[0] != req.user:
        permissions.require(req.cluster, req.user, "/access", ["Sys.Audit"])
    return views.permissions(req.cluster, req.params.get("path"))


@router.add("GET", "cluster/status")
def cluster_status(req: Request) -> Any:
    c = req.cluster
    rows: list[dict[str, Any]] = [
        {
            "type": "cluster",
            "id": "cluster",
            "name": "pvesim",
            "nodes": len(c.nodes),
            "quorate": int(c.has_quorum()),
            "version": len(c.nodes),
        }
    ]
    for i, node in enumerate(c.nodes.values()):
        rows.append(
            {
                "type": "node",
                "id": f"node/{node.name}",
                "name": node.name,
                "ip": node.ip,
                "nodeid": node.index,
                "online": int(node.online),
                "local": int(i == 0),
                "level": "",
            }
        )
    return rows


@router.add("GET", "cluster/resources")
def cluster_resources(req: Request) -> Any:
    rows = views.cluster_resources(req.cluster, req.params.get("type"))
    return permissions.visible_resources(req.cluster, req.user, rows)


@router.add("GET", "cluster/options")
def cluster_options(req: Request) -> Any:
    tags = (tag for vm in req.cluster.vms.values() for tag in vm.tags)
    options = req.cluster.datacenter.options(tags)
    return permissions.visible_options(req.cluster, req.user, options)


@router.add("GET", "cluster/tasks")
def cluster_tasks(req: Request) -> Any:
    tasks = sorted(req.cluster.tasks.values(), key=lambda t: -t.starttime)
    return [
        views.cluster_task_row(t)
        for t in tasks
        if permissions.may_list_cluster_task(req.cluster, req.user, t.upid.user)
    ]


@router.add("GET", "cluster/ha/resources")
def ha_resources(req: Request) -> Any:
    return req.cluster.ha.resources()


@router.add("GET", "cluster/ha/resources/{sid}")
def ha_resource(req: Request, sid: str) -> Any:
    for res in req.cluster.ha.resources():
        if res["sid"] == sid:
            return res
    raise ApiError(500, f"no such resource '{sid}'")


@router.add("GET", "cluster/ha/groups")
def ha_groups(req: Request) -> Any:
    return []


@router.add("GET", "cluster/ha/rules")
def ha_rules(req: Request) -> Any:
    if req.cluster.params.pve_version < 9:
        raise ApiError(501, "Method 'GET /cluster/ha/rules' not implemented")
    return []


@router.add("POST", "cluster/ha/resources/{sid}/migrate")
def ha_migrate(req: Request, sid: str) -> Any:
    return req.cluster.ha.request(sid, req.params["node"])


@router.add("GET", "cluster/ha/status/current")
def ha_status(req: Request) -> Any:
    return req.cluster.ha.status_current()


@router.add("GET", "pools")
def list_pools(req: Request) -> Any:
    return [{"poolid": p} for p in views.pools(req.cluster)]


@router.add("GET", "pools/{poolid}")
def get_pool(req: Request, poolid: str) -> Any:
    members = [
        views.vm_entry(req.cluster, v, resources=True)
        for v in req.cluster.vms.values()
        if v.pool == poolid
    ]
    if not members and poolid not in views.pools(req.cluster):
        raise ApiError(500, f"pool '{poolid}' does not exist")
    return {"members": members}


@router.add("GET", "nodes")
def list_nodes(req: Request) -> Any:
    return views.cluster_resources(req.cluster, "node")


@router.add("GET", "nodes/{node}/version")
def node_version(req: Request, node: str) -> Any:
    return views.version(req.cluster)


def _rrd_params(req: Request) -> str:
    timeframe = str(req.params["timeframe"])
    if timeframe not in views.RRD_STEPS:
        raise ApiError(501, f"pvesim does not model the RRD timeframe '{timeframe}'")
    return timeframe


@router.add("GET", "nodes/{node}/rrddata")
def node_rrddata(req: Request, node: str) -> Any:
    sample = views.node_rrd_sample(req.cluster, req.cluster.node(node))
    return views.rrd_rows(req.cluster, _rrd_params(req), sample)


@router.add("GET", "nodes/{node}/qemu/{vmid}/rrddata")
def vm_rrddata(req: Request, node: str, vmid: str) -> Any:
    sample = views.vm_rrd_sample(req.cluster.vm_on(node, _vmid(vmid)))
    return views.rrd_rows(req.cluster, _rrd_params(req), sample)


@router.add("GET", "nodes/{node}/status")
def node_status(req: Request, node: str) -> Any:
    return views.node_status(req.cluster, req.cluster.node(node))


@router.add("GET", "nodes/{node}/qemu")
def list_qemu(req: Request, node: str) -> Any:
    return [
        views.vm_entry(req.cluster, v, resources=False)
        for v in req.cluster.vms.values()
        if v.node == node
    ]


@router.add("GET", "nodes/{node}/lxc")
def list_lxc(req: Request, node: str) -> Any:
    return []


@router.add("GET", "nodes/{node}/storage")
def list_storage(req: Request, node: str) -> Any:
    target = req.cluster.node(node)
    return [views.storage_entry(target, s, resources=False) for s in target.storages]


@router.add("GET", "nodes/{node}/qemu/{vmid}/status/current")
def vm_status(req: Request, node: str, vmid: str) -> Any:
    return views.vm_status(req.cluster, req.cluster.vm_on(node, _vmid(vmid)))


@router.add("GET", "nodes/{node}/qemu/{vmid}/config")
def vm_config(req: Request, node: str, vmid: str) -> Any:
    return req.cluster.vm_on(node, _vmid(vmid)).config()


@router.add("PUT", "nodes/{node}/qemu/{vmid}/config")
def vm_config_update(req: Request, node: str, vmid: str) -> Any:
    """qemu-server API2/Qemu.pm update_vm (sync), the part pvesim models: `delete=lock`."""
    vm = req.cluster.vm_on(node, _vmid(vmid))
    skiplock = req.params.get("skiplock", False)
    if skiplock and req.user != ROOT:
        raise ApiError.param({"skiplock": "Only root may use this option."})
    deleted = re.sub(r"[,;]", " ", str(req.params.get("delete", ""))).split()
    # check_vm_modify_config_perm: `lock` is none of the option classes a privilege covers
    if "lock" in deleted and req.user != ROOT:
        raise ApiError(500, "only root can set 'lock' config")
    if vm.lock and not skiplock:  # update_vm's load_and_check_config: check_lock
        raise ApiError(500, f"VM is locked ({vm.lock})")
    if "lock" in deleted:
        vm.lock = None
    return None


@router.add("POST", "nodes/{node}/qemu/{vmid}/migrate")
def vm_migrate(req: Request, node: str, vmid: str) -> Any:
    p = req.params
    return req.cluster.migrate(
        node,
        _vmid(vmid),
        p["target"],
        user=req.user,
        online=p.get("online", False),
        force=p.get("force"),
        migration_type=p.get("migration_type"),
        migration_network=p.get("migration_network"),
        bwlimit=p.get("bwlimit"),
        with_local_disks=p.get("with-local-disks", False),
    )


@router.add("GET", "nodes/{node}/qemu/{vmid}/migrate")
def vm_migrate_precondition(req: Request, node: str, vmid: str) -> Any:
    # `target` is accepted and unused, as in qemu-server's migrate_vm_precondition
    return req.cluster.migrate_precondition(node, _vmid(vmid))


@router.add("POST", "nodes/{node}/migrateall")
def migrateall(req: Request, node: str) -> Any:
    p = req.params
    workers = p.get("maxworkers")  # `max-workers` is 9.1's (schema.ADDED_IN)
    vms = [int(v) for v in re.split(r"[,; ]+", p["vms"]) if v] if p.get("vms") else None
    # pve-manager API2/Nodes.pm migrateall: VM.Migrate on / or on each listed guest
    if not permissions.allowed(req.cluster, req.user, "/", ["VM.Migrate"]):
        if not vms:
            raise permissions.denied("/, VM.Migrate")
        for guest in vms:
            permissions.require(req.cluster, req.user, f"/vms/{guest}", ["VM.Migrate"])
    return req.cluster.migrateall(
        node,
        p["target"],
        user=req.user,
        maxworkers=workers,
        vms=vms,
        with_local_disks=p.get("with-local-disks"),
    )


router.include(task_routes.routes)
