"""`/nodes/{node}/tasks` routes: task lists, a task's status and log, stopping it
(pve-manager `PVE/API2/Tasks.pm`)."""

from __future__ import annotations

import re
from typing import Any

from pvesim import permissions
from pvesim.model import ApiError
from pvesim.model.tasklog import Task, status_type
from pvesim.routing import Pending, Request, Router, TotalList

routes = Router()


@routes.add("GET", "nodes/{node}/tasks")
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


@routes.add("GET", "nodes/{node}/tasks/{upid}/status")
def task_status(req: Request, node: str, upid: str) -> Any:
    task = _existing_task(req, node, upid)
    permissions.require_task_read(req.cluster, req.user, node, task.upid.user)
    return task.status()


@routes.add("GET", "nodes/{node}/tasks/{upid}/log")
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


@routes.add("DELETE", "nodes/{node}/tasks/{upid}")
def task_stop(req: Request, node: str, upid: str) -> Any:
    """Tasks.pm stop_task: answered once the worker is gone (up to 5 s, then SIGKILL)."""
    task = _existing_task(req, node, upid)
    permissions.require_task_stop(req.cluster, req.user, node, task.upid.user)
    stopping = req.cluster.stop_task(str(task.upid))
    return Pending(lambda: stopping.answered)
