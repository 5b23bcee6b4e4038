"""`/api2/json` routes: PVE's permission checks and parameter validation, then the model.

Every route is looked up in PVE's own API schema (`pvesim.schema`, the apidoc JSON) by its
path and method; the request is checked as pve-manager `PVE/HTTPServer.pm` `rest_handler`
does it: permissions first (`pvesim.permissions`, on the raw parameters), then the proxy to
the node (595 when it is offline), then `PVE::JSONSchema::validate` of every parameter,
path parameters included. Handlers get the typed non-path parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvesim import permissions, schema, views
from pvesim.model import ROOT, ApiError, Cluster
from pvesim.model.tasklog import Task, status_type

Params = dict[str, str]


@dataclass
class Request:
    cluster: Cluster
    user: str
    params: dict[str, Any]


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # apidoc form: /nodes/{node}/qemu/{vmid}/config
    pattern: re.Pattern[str]
    handler: Handler


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, "/" + path, regex, handler))
            return handler

        return register

    def check_schema(self) -> None:
        """Load PVE's schema and make sure it has every route (raises SchemaMissing)."""
        missing = [
            f"{r.method} {r.path}"
            for r in self.routes
            if r.method not in schema.api_schema().get(r.path, {})
        ]
        if missing:
            raise schema.SchemaMissing(f"PVE's API schema has no {', '.join(missing)}")

    def dispatch(self, cluster: Cluster, method: str, path: str, user: str, raw: Params) -> Any:
        for route in self.routes:
            match = route.pattern.match(path)
            if not match or route.method != method:
                continue
            uri = match.groupdict()
            conflicts = {k: _DUPLICATE for k, v in uri.items() if k in raw and raw[k] != v}
            if conflicts:
                raise ApiError.param(conflicts)
            params = raw | uri
            info = schema.method_info(method, route.path)
            permissions.check_route(cluster, user, info, "/" + path, params)
            if "node" in uri:
                _require_node_reachable(cluster, uri["node"])
            release = views.PVE_VERSIONS[cluster.params.pve_version][1]
            checked = schema.validate(schema.parameters(method, route.path, release), params)
            body = {k: v for k, v in checked.items() if k not in uri}
            return route.handler(Request(cluster, user, body), **uri)
        raise ApiError(501, f"Method '{method} /{path}' not implemented")


_DUPLICATE = "duplicate parameter (already defined in URI) with conflicting values!"


def _require_node_reachable(cluster: Cluster, node: str) -> None:
    """Requests for another node are proxied by pveproxy; an offline node gives 595."""
    target = cluster.node(node)
    if not target.online:
        raise ApiError(595, f"Connection refused while proxying to node {node} (No route to host)")


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


@router.add("GET", "nodes/{node}/tasks")
def node_tasks(req: Request, node: str) -> Any:
    """pve-manager PVE/API2/Tasks.pm node_tasks: running tasks first (the `active` file, in
    start order, `status` RUNNING), then the archive `index` read backwards (last ended first);
    every filter before `start`/`limit`, and `total` counts every match."""
    p = req.params
    source = p.get("source", "archive")
    on_node = [t for t in req.cluster.tasks.values() if t.upid.node == node]
    tasks: list[Task] = []
    if source in ("active", "all"):
        tasks += [t for t in on_node if t.running]
    if source != "active":
        ended = [t for t in on_node if not t.running]
        tasks += sorted(ended, key=lambda t: (-(t.endtime or 0.0), t.starttime))
    wanted = _status_types(p)
    userfilter = str(p.get("userfilter") or "").lower()
    rows: list[dict[str, Any]] = []
    count = 0
    start, limit = p.get("start", 0), p.get("limit", 50)
    for task in tasks:
        u, row = task.upid, task.list_row()
        if userfilter and userfilter not in str(row["user"]).lower():  # m/\Q..\E/i
            continue
        if not permissions.may_read_task(req.cluster, req.user, node, u.user):
            continue
        if "typefilter" in p and u.type != p["typefilter"]:
            continue
        if p.get("vmid") and u.id != str(p["vmid"]):
            continue
        if "since" in p and task.starttime < p["since"]:
            continue
        if "until" in p and task.starttime > p["until"]:
            continue
        if status_type(task.exitstatus) not in wanted:  # running: no status yet, `unknown`
            continue
        count += 1
        if count > start and len(rows) < limit:
            rows.append(row)
    return TotalList(rows, count)


def _status_types(p: dict[str, Any]) -> set[str]:
    """Tasks.pm: `errors` drops only `ok` and wins over `statusfilter` (a list, any case)."""
    every = {"ok", "warning", "error", "unknown"}
    if p.get("errors"):
        return every - {"ok"}
    if p.get("statusfilter") is not None:
        return {f.lower() for f in re.split(r"[\s,;\0]+", str(p["statusfilter"])) if f}
    return every


# pve-common src/PVE/UPID.pm decode
_UPID = re.compile(
    r"^UPID:[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:"
    r"[0-9A-Fa-f]{8}:[^:\s/]+:[^:\s/]*:[^:\s/]+:$"
)


def _node_task(req: Request, node: str, upid: str) -> Task | None:
    """The task of `upid` on `node` (its log file lives there), None if it has none; an
    unparsable UPID is a parameter error (Tasks.pm: raise_param_exc)."""
    if not _UPID.match(upid):
        raise ApiError.param({"upid": "unable to parse worker upid"})
    task = req.cluster.tasks.get(upid)
    return task if task is not None and task.upid.node == node else None


def _existing_task(req: Request, node: str, upid: str) -> Task:
    """Tasks.pm read_task_status and stop_task: `no such task` when its log file is missing."""
    task = _node_task(req, node, upid)
    if task is None:
        raise ApiError.param({"upid": "no such task"})
    return task


@router.add("GET", "nodes/{node}/tasks/{upid}/status")
def task_status(req: Request, node: str, upid: str) -> Any:
    task = _existing_task(req, node, upid)
    permissions.require_task_read(req.cluster, req.user, node, task.upid.user)
    return task.status()


@router.add("GET", "nodes/{node}/tasks/{upid}/log")
def task_log(req: Request, node: str, upid: str) -> Any:
    """Tasks.pm read_task_log -> pve-common Tools.pm dump_logfile: `limit` 0 reads to the end,
    `total` is the file's line count, an empty log reads as one line `no content`, and a
    missing file (no -f check here) as one line `unable to open file - ...`."""
    task = _node_task(req, node, upid)
    if task is None:
        return TotalList([{"n": 1, "t": "unable to open file - No such file or directory"}], 1)
    permissions.require_task_read(req.cluster, req.user, node, task.upid.user)
    if not task.lines:
        return TotalList([{"n": 1, "t": "no content"}], 1)
    start, limit = req.params.get("start", 0), req.params.get("limit", 50)
    lines = task.lines[start:] if limit == 0 else task.lines[start : start + limit]
    return TotalList(
        [{"n": start + i + 1, "t": text} for i, text in enumerate(lines)], len(task.lines)
    )


@router.add("DELETE", "nodes/{node}/tasks/{upid}")
def task_stop(req: Request, node: str, upid: str) -> Any:
    """Tasks.pm stop_task: answered once the worker is gone (up to 5 s, then SIGKILL)."""
    task = _existing_task(req, node, upid)
    permissions.require_task_stop(req.cluster, req.user, node, task.upid.user)
    stopping = req.cluster.stop_task(str(task.upid))
    return Pending(lambda: stopping.answered)


@dataclass(frozen=True)
class Pending:
    """An answer PVE sends only once `ready()` holds (the server waits, advancing time)."""

    ready: Callable[[], bool]
    data: Any = None


class TotalList(list[Any]):
    """A list result that PVE sends with a `total` beside `data` (task logs)."""

    def __init__(self, rows: list[Any], total: int) -> None:
        super().__init__(rows)
        self.total = total
