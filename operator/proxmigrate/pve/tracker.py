"""Batched task tracking (pure): one task list per node per poll, not one request per UPID.

The caller fetches `PveClient.tasks(node, since=poll_since(...))` for every node in
`nodes_to_poll(...)`, hands the lists to `evaluate`, and fetches logs only for failures.
What a task's own log tells is read in pve/task_log.py.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from proxmigrate.pve.classifier import is_success
from proxmigrate.pve.upid import Upid, is_upid, parse_upid

TaskList = Sequence[Mapping[str, Any]]
# What PVE's own task list reports for an ended task without an exit status
# (pve-common `PVE/UPID.pm` `normalize_status_type`): a failure the classifier cannot name.
_NO_EXIT_STATUS = "unknown"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackedTask:
    """A migration being watched; `source` is the VM's node, where an HA child task runs."""

    vmid: int
    upid: str
    source: str | None = None

    @cached_property
    def parsed(self) -> Upid:
        return parse_upid(self.upid)


@dataclass(frozen=True)
class TaskEnd:
    task: TrackedTask
    exitstatus: str
    endtime: int | None

    @property
    def succeeded(self) -> bool:
        return is_success(self.exitstatus)


@dataclass(frozen=True)
class HaHandoff:
    """An HA request (`hamigrate`) ended OK before the move; track `child` from now on.

    `child` is None until the HA manager starts the real `qmigrate` (its loop is ~10 s);
    the caller keeps the hamigrate tracked meanwhile and gives up after its own timeout.
    """

    request: TrackedTask
    child: TrackedTask | None


@dataclass(frozen=True)
class PollResult:
    finished: tuple[TaskEnd, ...]
    running: tuple[TrackedTask, ...]
    unseen: tuple[TrackedTask, ...]  # node polled, task absent: ask its status directly
    handoffs: tuple[HaHandoff, ...]

    @property
    def failed(self) -> tuple[TaskEnd, ...]:
        """The only tasks whose log is worth fetching (for the classifier)."""
        return tuple(end for end in self.finished if not end.succeeded)


def first_migration_since(
    entries: Iterable[Mapping[str, Any]],
    vmid: int,
    since: int,
    exclude: Collection[str] = (),
    types: Collection[str] = ("qmigrate",),
) -> str | None:
    """The earliest task of `types` of `vmid` in a task list started at/after `since` (epoch
    s), leaving out the UPIDs in `exclude` (those earlier attempts already recorded)."""
    found = [
        parse_upid(str(entry["upid"]))
        for entry in entries
        if is_upid(entry.get("upid")) and entry["upid"] not in exclude
    ]
    ours = [u for u in found if u.type in types and u.vmid == vmid and u.starttime >= since]
    return str(min(ours, key=lambda upid: upid.starttime)) if ours else None


def nodes_to_poll(tracked: Iterable[TrackedTask]) -> set[str]:
    nodes: set[str] = set()
    for task in tracked:
        nodes.add(task.parsed.node)
        if task.parsed.type == "hamigrate" and task.source:
            nodes.add(task.source)
    return nodes


def poll_since(tracked: Iterable[TrackedTask]) -> int | None:
    """The earliest start among tracked tasks: a `since` that still lists all of them."""
    starts = [task.parsed.starttime for task in tracked]
    return min(starts) if starts else None


def evaluate(tracked: Sequence[TrackedTask], task_lists: Mapping[str, TaskList]) -> PollResult:
    """Sort tracked tasks by what one batch of task lists (keyed by node) says about them."""
    by_upid = {
        str(entry["upid"]): entry for entries in task_lists.values() for entry in entries
        if "upid" in entry
    }  # fmt: skip
    finished: list[TaskEnd] = []
    running: list[TrackedTask] = []
    unseen: list[TrackedTask] = []
    handoffs: list[HaHandoff] = []
    for task in tracked:
        entry = by_upid.get(task.upid)
        if entry is None:
            (unseen if task.parsed.node in task_lists else running).append(task)
            continue
        exitstatus = task_exitstatus(entry)
        if exitstatus is None:
            running.append(task)
        elif task.parsed.type == "hamigrate" and is_success(exitstatus):
            handoffs.append(HaHandoff(task, _ha_child(task, by_upid.values())))
        else:
            endtime = entry.get("endtime")
            finished.append(TaskEnd(task, exitstatus, int(endtime) if endtime else None))
    return PollResult(tuple(finished), tuple(running), tuple(unseen), tuple(handoffs))


def task_exitstatus(entry: Mapping[str, Any]) -> str | None:
    """The end status of a task list row or a task status answer; None while it runs.

    pve-manager `PVE/API2/Tasks.pm` has two shapes (PVE 8 and 9 alike):
    - `node_tasks` (`GET /nodes/{node}/tasks`) rows: a task still in the active list without
      an end gets `status: "RUNNING"` (the `source eq 'active'` branch; pve-common
      `PVE/INotify.pm` `read_active_workers` sets `endtime` and `status` only once a task
      ended); an ended task has `endtime` and its exit status in `status` (`OK`,
      `WARNINGS: n`, or the error), which PVE counts as `unknown` when absent (pve-common
      `PVE/UPID.pm` `normalize_status_type`).
    - `read_task_status` (`GET .../tasks/{upid}/status`): `status` is `running` or
      `stopped`, the exit status is in `exitstatus`.
    Any other shape is read as still running and logged: calling it failed would start a
    second migration while PVE may still be moving the VM; the tracker keeps asking, and
    `taskTimeoutSeconds` bounds the wait.
    """
    status = entry.get("status")
    if entry.get("endtime"):
        return str(status or _NO_EXIT_STATUS)
    if status == "stopped":
        return str(entry.get("exitstatus") or _NO_EXIT_STATUS)
    if status not in ("RUNNING", "running"):
        log.warning(
            "task %s: unrecognised task entry %r, taken as running", entry.get("upid"), dict(entry)
        )
    return None


def _ha_child(request: TrackedTask, entries: Iterable[Mapping[str, Any]]) -> TrackedTask | None:
    upid = first_migration_since(entries, request.vmid, request.parsed.starttime)
    if upid is None:
        return None
    return TrackedTask(request.vmid, upid, request.source or parse_upid(upid).node)
