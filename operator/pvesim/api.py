"""`/api2/json` routes: parameter checks as PVE's JSON schema does them, then the model."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvesim import views
from pvesim.model import ROOT, ApiError, Cluster

Params = dict[str, str]
# name -> (type, required); the type is integer | boolean | number | string
Schema = dict[str, tuple[str, bool]]
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass
class Request:
    cluster: Cluster
    user: str
    params: dict[str, Any]


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    schema: Schema


def _check_params(schema: Schema, raw: Params) -> dict[str, Any]:
    """Reject unknown/missing/mistyped parameters with PVE's wording (JSONSchema.pm)."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in schema:
            errors[name] = (
                "property is not defined in schema and the schema does not allow additional "
                "properties"
            )
            continue
        kind = schema[name][0]
        if kind == "integer":
            if not re.fullmatch(r"[+-]?\d+", value):
                errors[name] = f"type check ('integer') failed - got '{value}'"
                continue
            values[name] = int(value)
        elif kind == "number":
            try:
                values[name] = float(value)
            except ValueError:
                errors[name] = f"type check ('number') failed - got '{value}'"
        elif kind == "boolean":
            if value.lower() not in _TRUE | _FALSE:
                errors[name] = f"type check ('boolean') failed - got '{value}'"
                continue
            values[name] = value.lower() in _TRUE
        else:
            values[name] = value
    for name, (_, required) in schema.items():
        if required and name not in raw and name not in errors:
            errors[name] = "property is missing and it is not optional"
    if errors:
        raise ApiError.param(errors)
    return values


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self, method: str, path: str, schema: Schema | None = None
    ) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, regex, handler, schema or {}))
            return handler

        return register

    def dispatch(self, cluster: Cluster, method: str, path: str, user: str, raw: Params) -> Any:
        for route in self.routes:
            match = route.pattern.match(path)
            if not match or route.method != method:
                continue
            node = match.groupdict().get("node")
            if node is not None:
                _require_node_reachable(cluster, node)
            params = _check_params(route.schema, raw)
            return route.handler(Request(cluster, user, params), **match.groupdict())
        raise ApiError(501, f"Method '{method} /{path}' not implemented")


def _require_node_reachable(cluster: Cluster, node: str) -> None:
    """Requests for another node are proxied by pveproxy; an offline node gives 595."""
    target = cluster.node(node)
    if not target.online:
        raise ApiError(595, f"Connection refused while proxying to node {node} (No route to host)")


def _vmid(value: str) -> int:
    if not value.isdigit():
        raise ApiError.param({"vmid": f"type check ('integer') failed - got '{value}'"})
    return int(value)


router = Router()
_TASK_LIST: Schema = {
    "start": ("integer", False),
    "limit": ("integer", False),
    "vmid": ("integer", False),
    "typefilter": ("string", False),
    "userfilter": ("string", False),
    "source": ("string", False),
    "errors": ("boolean", False),
    "since": ("integer", False),
    "until": ("integer", False),
    "statusfilter": ("string", False),
}


@router.add("GET", "version")
def get_version(req: Request) -> Any:
    return views.version(req.cluster)


@router.add("GET", "access/permissions", {"path": ("string", False), "userid": ("string", False)})
def access_permissions(req: Request) -> Any:
    """What the caller may do; a token must not ask for another user's (PVE refuses too)."""
    userid = req.params.get("userid")
    if userid is not None and userid != req.user:
        raise ApiError(403, "Permission check failed (Sys.Audit on /access)")
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


@router.add("GET", "cluster/resources", {"type": ("string", False)})
def cluster_resources(req: Request) -> Any:
    kind = req.params.get("type")
    if kind not in (None, "vm", "storage", "node", "sdn", "pool"):
        raise ApiError.param(
            {
                "type": f"value '{kind}' does not have a value in the enumeration "
                "'vm, storage, node, sdn'"
            }
        )
    return views.cluster_resources(req.cluster, kind)


@router.add("GET", "cluster/options")
def cluster_options(req: Request) -> Any:
    return req.cluster.datacenter.options()


@router.add("GET", "cluster/tasks")
def cluster_tasks(req: Request) -> Any:
    tasks = sorted(req.cluster.tasks.values(), key=lambda t: -t.starttime)
    return [views.task_row(t) for t in tasks]


@router.add("GET", "cluster/ha/resources", {"type": ("string", False)})
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


@router.add("POST", "cluster/ha/resources/{sid}/migrate", {"node": ("string", True)})
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


_RRD: Schema = {"timeframe": ("string", True), "cf": ("string", False)}


def _rrd_params(req: Request) -> str:
    timeframe, cf = req.params["timeframe"], req.params.get("cf", "AVERAGE")
    if timeframe not in views.RRD_STEPS:
        raise ApiError.param(
            {
                "timeframe": f"value '{timeframe}' does not have a value in the enumeration "
                "'hour, day, week, month, year'"
            }
        )
    if cf not in ("AVERAGE", "MAX"):
        raise ApiError.param(
            {"cf": f"value '{cf}' does not have a value in the enumeration 'AVERAGE, MAX'"}
        )
    return str(timeframe)


@router.add("GET", "nodes/{node}/rrddata", _RRD)
def node_rrddata(req: Request, node: str) -> Any:
    sample = views.node_rrd_sample(req.cluster, req.cluster.node(node))
    return views.rrd_rows(req.cluster, _rrd_params(req), sample)


@router.add("GET", "nodes/{node}/qemu/{vmid}/rrddata", _RRD)
def vm_rrddata(req: Request, node: str, vmid: str) -> Any:
    sample = views.vm_rrd_sample(req.cluster.vm_on(node, _vmid(vmid)))
    return views.rrd_rows(req.cluster, _rrd_params(req), sample)


@router.add("GET", "nodes/{node}/status")
def node_status(req: Request, node: str) -> Any:
    return views.node_status(req.cluster, req.cluster.node(node))


@router.add("GET", "nodes/{node}/qemu", {"full": ("boolean", False)})
def list_qemu(req: Request, node: str) -> Any:
    return [
        views.vm_entry(req.cluster, v, resources=False)
        for v in req.cluster.vms.values()
        if v.node == node
    ]


@router.add("GET", "nodes/{node}/lxc")
def list_lxc(req: Request, node: str) -> Any:
    return []


@router.add(
    "GET", "nodes/{node}/storage", {"content": ("string", False), "enabled": ("boolean", False)}
)
def list_storage(req: Request, node: str) -> Any:
    target = req.cluster.node(node)
    return [views.storage_entry(target, s, resources=False) for s in target.storages]


@router.add("GET", "nodes/{node}/qemu/{vmid}/status/current")
def vm_status(req: Request, node: str, vmid: str) -> Any:
    return views.vm_status(req.cluster, req.cluster.vm_on(node, _vmid(vmid)))


@router.add(
    "GET",
    "nodes/{node}/qemu/{vmid}/config",
    {"current": ("boolean", False), "snapshot": ("string", False)},
)
def vm_config(req: Request, node: str, vmid: str) -> Any:
    return req.cluster.vm_on(node, _vmid(vmid)).config()


@router.add(
    "PUT",
    "nodes/{node}/qemu/{vmid}/config",
    {"delete": ("string", False), "digest": ("string", False), "skiplock": ("boolean", False)},
)
def vm_config_update(req: Request, node: str, vmid: str) -> Any:
    vm = req.cluster.vm_on(node, _vmid(vmid))
    if "skiplock" in req.params and req.user != ROOT:
        raise ApiError.param({"skiplock": "Only root may use this option."})
    deleted = {d.strip() for d in str(req.params.get("delete", "")).split(",") if d.strip()}
    if "lock" in deleted:
        vm.lock = None
    elif vm.lock and not req.params.get("skiplock"):
        raise ApiError(500, f"VM is locked ({vm.lock})")
    return None


_MIGRATE: Schema = {
    "target": ("string", True),
    "online": ("boolean", False),
    "force": ("boolean", False),
    "migration_type": ("string", False),
    "migration_network": ("string", False),
    "bwlimit": ("integer", False),
    "with-local-disks": ("boolean", False),
    "targetstorage": ("string", False),
    "with-conntrack-state": ("boolean", False),  # PVE 9 (qemu-server 9.0), not modelled
}


def _require_pve9_param(req: Request, name: str) -> None:
    """A parameter PVE 9 added is unknown to PVE 8's schema."""
    if name in req.params and req.cluster.params.pve_version < 9:
        raise ApiError.param(
            {
                name: "property is not defined in schema and the schema "
                "does not allow additional properties"
            }
        )


@router.add("POST", "nodes/{node}/qemu/{vmid}/migrate", _MIGRATE)
def vm_migrate(req: Request, node: str, vmid: str) -> Any:
    p = req.params
    _require_pve9_param(req, "with-conntrack-state")
    kind = p.get("migration_type")
    if kind is not None and kind not in ("secure", "insecure"):
        raise ApiError.param(
            {
                "migration_type": f"value '{kind}' does not have a value in the "
                "enumeration 'secure, insecure'"
            }
        )
    return req.cluster.migrate(
        node,
        _vmid(vmid),
        p["target"],
        user=req.user,
        online=p.get("online", False),
        force=p.get("force"),
        migration_type=kind,
        migration_network=p.get("migration_network"),
        bwlimit=p.get("bwlimit"),
        with_local_disks=p.get("with-local-disks", False),
    )


@router.add("GET", "nodes/{node}/qemu/{vmid}/migrate", {"target": ("string", False)})
def vm_migrate_precondition(req: Request, node: str, vmid: str) -> Any:
    return req.cluster.migrate_precondition(node, _vmid(vmid), req.params.get("target"))


@router.add(
    "POST",
    "nodes/{node}/migrateall",
    {
        "target": ("string", True),
        "maxworkers": ("integer", False),
        "max-workers": ("integer", False),
        "vms": ("string", False),
        "with-local-disks": ("boolean", False),
    },
)
def migrateall(req: Request, node: str) -> Any:
    p = req.params
    _require_pve9_param(req, "max-workers")
    workers = p.get("maxworkers") or p.get("max-workers")
    if workers is not None and not 1 <= workers <= 64:
        raise ApiError.param(
            {"maxworkers": f"value must have a minimum value of 1 - got {workers}"}
        )
    vms = [int(v) for v in re.split(r"[,; ]+", p["vms"]) if v] if p.get("vms") else None
    return req.cluster.migrateall(
        node,
        p["target"],
        user=req.user,
        maxworkers=workers,
        vms=vms,
        with_local_disks=p.get("with-local-disks"),
    )


@router.add("GET", "nodes/{node}/tasks", _TASK_LIST)
def node_tasks(req: Request, node: str) -> Any:
    p = req.params
    source = p.get("source", "archive")
    rows = []
    on_node = (t for t in req.cluster.tasks.values() if t.upid.node == node)
    for task in sorted(on_node, key=lambda t: (-t.starttime, str(t.upid))):
        u = task.upid
        if (source == "active" and not task.running) or (source == "archive" and task.running):
            continue
        if "typefilter" in p and u.type != p["typefilter"]:
            continue
        if "vmid" in p and u.id != str(p["vmid"]):
            continue
        if "userfilter" in p and p["userfilter"] not in u.user:
            continue
        if p.get("errors") and (task.running or task.exitstatus == "OK"):
            continue
        if "since" in p and task.starttime < p["since"]:  # Tasks.pm filter_task
            continue
        if "until" in p and task.starttime > p["until"]:
            continue
        rows.append(views.task_row(task))
    start, limit = p.get("start", 0), p.get("limit", 50)
    return rows[start : start + limit]


def _node_task(req: Request, node: str, upid: str) -> Any:
    task = req.cluster.tasks.get(upid)
    if task is None or task.upid.node != node:
        raise ApiError(
            500,
            f"unable to parse worker upid '{upid}'"
            if not upid.startswith("UPID:")
            else f"no such task '{upid}'",
        )
    return task


@router.add("GET", "nodes/{node}/tasks/{upid}/status")
def task_status(req: Request, node: str, upid: str) -> Any:
    return _node_task(req, node, upid).status()


@router.add(
    "GET",
    "nodes/{node}/tasks/{upid}/log",
    {"start": ("integer", False), "limit": ("integer", False), "download": ("boolean", False)},
)
def task_log(req: Request, node: str, upid: str) -> Any:
    task = _node_task(req, node, upid)
    start, limit = req.params.get("start", 0), req.params.get("limit", 50)
    lines = task.lines[start : start + limit]
    return TotalList(
        [{"n": start + i + 1, "t": text} for i, text in enumerate(lines)], len(task.lines)
    )


@router.add("DELETE", "nodes/{node}/tasks/{upid}")
def task_stop(req: Request, node: str, upid: str) -> Any:
    req.cluster.stop_task(str(_node_task(req, node, upid).upid))
    return None


class TotalList(list[Any]):
    """A list result that PVE sends with a `total` beside `data` (task logs)."""

    def __init__(self, rows: list[Any], total: int) -> None:
        super().__init__(rows)
        self.total = total
