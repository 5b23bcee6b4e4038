"""Who may call what: the apidoc `permissions` objects and the checks PVE's handlers make inside.

Route checks follow pve-manager `PVE/HTTPServer.pm` `rest_handler` (an API token on a method
without `allowtoken` is refused, then `check_api2_permissions`, before the parameters are
verified) and pve-access-control `PVE/RPCEnvironment.pm` `check_api2_permissions` (root@pam
passes; no `permissions` means root only; `user => 'all'` passes, its handler filters) and
`exec_api2_perm_check` (`perm` with `any`/`require_param`, `and`, `or`). The privileges
themselves: `pvesim.model.access`. Refusals are 403 `Permission check failed (<path>, <priv>)`
(pve-common `PVE/Exception.pm` `raise_perm_exc`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pvesim.model import ROOT, ApiError, Cluster
from pvesim.model.access import normalize_path


def denied(what: str = "") -> ApiError:
    return ApiError(403, f"Permission check failed ({what})" if what else "Permission check failed")


def allowed(
    cluster: Cluster, who: str, path: str, privs: Iterable[str], any_of: bool = False
) -> bool:
    """RPCEnvironment.pm `check`/`check_any` with `$noerr`."""
    return cluster.access.has(who, path, privs, any_of=any_of, pool_of=lambda p: _pool(cluster, p))


def require(cluster: Cluster, who: str, path: str, privs: list[str], any_of: bool = False) -> None:
    """RPCEnvironment.pm `check`/`check_any`: 403 naming the path and the privilege(s)."""
    if not allowed(cluster, who, path, privs, any_of):
        raise denied(
            f"{path}, {'|'.join(privs) if any_of else _first_missing(cluster, who, path, privs)}"
        )


def check_route(
    cluster: Cluster, who: str, info: dict[str, Any], uri: str, params: dict[str, str]
) -> None:
    """HTTPServer.pm `rest_handler` + RPCEnvironment.pm `check_api2_permissions`."""
    if "!" in who and not info.get("allowtoken"):
        raise denied(f"URI '{uri}' not available with API token, need proper ticket.\n")
    if who == ROOT:
        return
    perm = info.get("permissions")
    if not perm:
        raise denied("user != root@pam")
    if perm.get("user") == "all":
        return
    if "check" not in perm:
        raise denied()
    _exec_check(cluster, who, perm["check"], params, noerr=False)


def _exec_check(
    cluster: Cluster, who: str, check: list[Any], params: dict[str, str], *, noerr: bool
) -> bool:
    """RPCEnvironment.pm `exec_api2_perm_check` (the tests pvesim's routes use)."""
    test, rest = check[0], check[1:]
    if test == "and":
        return all(_exec_check(cluster, who, sub, params, noerr=noerr) for sub in rest)
    if test == "or":
        if any(_exec_check(cluster, who, sub, params, noerr=True) for sub in rest):
            return True
        if noerr:
            return False
        raise denied()
    if test != "perm":
        raise ApiError(501, f"pvesim does not evaluate permission test '{test}'")
    template, privs, options = (
        rest[0],
        list(rest[1]),
        dict(zip(rest[2::2], rest[3::2], strict=False)),
    )
    required = options.get("require_param")
    if required and required not in params:
        if noerr:
            return False
        raise denied()
    # PVE::Tools template_replace: a missing or empty parameter becomes '-'
    path = normalize_path(re.sub(r"\{([^}]+)\}", lambda m: params.get(m[1]) or "-", template))
    any_of = bool(options.get("any"))
    if noerr:
        return allowed(cluster, who, path, privs, any_of)
    require(cluster, who, path, privs, any_of)
    return True


# -- checks PVE's handlers make themselves ----------------------------------------------------
def owns_task(who: str, task_user: str) -> bool:
    """pve-manager `API2/Tasks.pm` `$check_task_user`: a token sees its own tasks only, a
    user its own and its tokens'."""
    return who == task_user or (who == task_user.partition("!")[0])


def may_read_task(cluster: Cluster, who: str, node: str, task_user: str) -> bool:
    """Tasks.pm `node_tasks`/`read_task_log`/`read_task_status`: the owner, or `Sys.Audit`
    on `/nodes/<node>`."""
    return owns_task(who, task_user) or allowed(cluster, who, f"/nodes/{node}", ["Sys.Audit"])


def may_list_cluster_task(cluster: Cluster, who: str, task_user: str) -> bool:
    """pve-manager `API2/Cluster.pm` `tasks`: all with `Sys.Audit` on `/`, else the rows whose
    user (a token's task split to its user) is the caller - so never for a token."""
    return allowed(cluster, who, "/", ["Sys.Audit"]) or task_user.partition("!")[0] == who


def require_task_read(cluster: Cluster, who: str, node: str, task_user: str) -> None:
    if not owns_task(who, task_user):
        require(cluster, who, f"/nodes/{node}", ["Sys.Audit"])


def require_task_stop(cluster: Cluster, who: str, node: str, task_user: str) -> None:
    """Tasks.pm `stop_task`: another's task needs `Sys.Modify` on `/nodes/<node>`."""
    if not owns_task(who, task_user):
        require(cluster, who, f"/nodes/{node}", ["Sys.Modify"])


# pve-manager API2/Cluster.pm get_options: without Sys.Audit on / only these (plus the
# per-user `allowed-tags`) are returned.
_OPTIONS_WITHOUT_AUDIT = ("console", "tag-style", "allowed-tags")


def visible_options(cluster: Cluster, who: str, options: dict[str, Any]) -> dict[str, Any]:
    if who == ROOT or allowed(cluster, who, "/", ["Sys.Audit"]):
        return options
    return {k: v for k, v in options.items() if k in _OPTIONS_WITHOUT_AUDIT}


# API2Tools.pm extract_node_stats($exclude_stats): what a node row lacks without Sys.Audit.
_NODE_STATS = ("uptime", "cpu", "mem", "disk", "maxcpu", "maxmem", "maxdisk")


def visible_resources(
    cluster: Cluster, who: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """pve-manager API2/Cluster.pm `resources`: guests need `VM.Audit` on `/vms/<vmid>` (and
    lose `pool` without `Pool.Audit` on it), storages `Datastore.Audit` on `/storage/<id>`,
    pools `Pool.Audit`; nodes are always listed, their figures only with `Sys.Audit` on
    `/nodes/<node>`."""
    if who == ROOT:
        return rows
    out = []
    for row in rows:
        kind = row.get("type")
        if kind in ("qemu", "lxc"):
            if not allowed(cluster, who, f"/vms/{row['vmid']}", ["VM.Audit"]):
                continue
            pool = row.get("pool")
            if pool is not None and not allowed(cluster, who, f"/pool/{pool}", ["Pool.Audit"]):
                row = {k: v for k, v in row.items() if k != "pool"}
        elif kind == "storage":
            if not allowed(cluster, who, f"/storage/{row['storage']}", ["Datastore.Audit"]):
                continue
        elif kind == "pool":
            if not allowed(cluster, who, f"/pool/{row['pool']}", ["Pool.Audit"]):
                continue
        elif kind == "node" and not allowed(cluster, who, f"/nodes/{row['node']}", ["Sys.Audit"]):
            row = {k: v for k, v in row.items() if k not in _NODE_STATS}
        out.append(row)
    return out


def _first_missing(cluster: Cluster, who: str, path: str, privs: list[str]) -> str:
    """RPCEnvironment.pm `check` names the first privilege missing."""
    return next(p for p in privs if not allowed(cluster, who, path, [p]))


def _pool(cluster: Cluster, path: str) -> str | None:
    """The pool a `/vms/<vmid>` path's guest belongs to (RPCEnvironment.pm pool roles)."""
    match = re.fullmatch(r"/vms/(\d+)", path)
    vm = cluster.vms.get(int(match[1])) if match else None
    return vm.pool if vm is not None else None
