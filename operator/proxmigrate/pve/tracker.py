"""Batched task tracking (pure): one task list per node per poll, not one request per UPID.

The caller fetches `PveClient.tasks(node, since=poll_since(...))` for every node in
`nodes_to_poll(...)`, hands the lists to `evaluate`, and fetches logs only for failures.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
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


# The line a worker task's log ends with, written by the task itself as it exits (pve-common
# `src/PVE/RESTEnvironment.pm` fork_worker: `TASK OK`, `TASK WARNINGS: n`, `TASK ERROR: msg`);
# PVE 8 and 9 alike.
_TASK_END = re.compile(r"^TASK (OK|WARNINGS: \d+|ERROR: .+)$")


def log_exitstatus(log_lines: Sequence[str]) -> str | None:
    """The exit status a task's log ends with, as its task list row reports it (`OK`,
    `WARNINGS: n` or the error); None while the log has no end line.

    The task list takes its status from this very line (pve-common `src/PVE/UPID.pm`
    read_status reads the log's last line), so one log read tells whether a task ended as
    well as a task list would. A worker killed outright writes no end line: only the task
    list shows its end (`unexpected status`)."""
    end = _TASK_END.match(log_lines[-1]) if log_lines else None
    if end is None:
        return None
    status = end[1]
    return status[len("ERROR: ") :] if status.startswith("ERROR: ") else status


def _ha_child(request: TrackedTask, entries: Iterable[Mapping[str, Any]]) -> TrackedTask | None:
    upid = first_migration_since(entries, request.vmid, request.parsed.starttime)
    if upid is None:
        return None
    return TrackedTask(request.vmid, upid, request.source or parse_upid(upid).node)


# `migration active, transferred 1.1 GiB of 8.0 GiB VM-state, 117.4 MiB/s`, and when the
# guest dirties faster than the stream sends `, VM dirties lots of memory: 180.0 MiB/s`
# (qemu-server `src/PVE/QemuMigrate.pm` phase2; PVE 8 and 9 alike)
_PROGRESS = re.compile(
    r"migration active, transferred ([\d.]+) (B|KiB|MiB|GiB|TiB) of ([\d.]+) (B|KiB|MiB|GiB|TiB)"
    r"(?: VM-state, ([\d.]+) (B|KiB|MiB|GiB|TiB)/s)?"
    r"(?:.*VM dirties lots of memory: ([\d.]+) (B|KiB|MiB|GiB|TiB)/s)?"
)
_DONE = re.compile(r"migration status: completed|migration completed|average migration speed")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


@dataclass(frozen=True)
class TransferProgress:
    """Where a task's RAM transfer stands, from its last progress line (`migration active,
    transferred X of Y VM-state, Z/s`, in bytes) or its completion line.

    `total` is the guest's RAM size (QEMU `query-migrate` `ram.total`), `transferred` every
    byte sent so far, pages sent again after the guest dirtied them included: it passes
    `total` once a busy guest's re-sent pages add up to more than its memory.
    """

    transferred: float
    total: float
    rate: float  # bytes/s; 0 when the line carried no rate
    completed: bool = False
    dirty_rate: float = 0.0  # bytes/s, shown by PVE only while it exceeds `rate`

    @property
    def resending(self) -> bool:
        """The first pass is over: what is left is memory the guest dirtied meanwhile."""
        return not self.completed and self.transferred >= self.total

    @property
    def seconds_left(self) -> float | None:
        """Until the first pass ends at the current rate (a guest that keeps dirtying memory
        takes longer: re-check before relying on it); None without a rate, or once the
        first pass is over (`resending`): QEMU's remaining bytes are not in the log, so how
        long the re-sent pages take is unknown, and "0 left" would be wrong for minutes."""
        if self.completed:
            return 0.0
        if self.rate <= 0 or self.resending:
            return None
        return (self.total - self.transferred) / self.rate

    def dirty_bounds(self, elapsed: float) -> tuple[float, float]:
        """What the log tells of the guest's dirty rate after `elapsed` seconds of transfer,
        as (at least, at most) bytes/s. PVE names the rate only while it exceeds the
        stream's, so without it the rate is at most the stream's; once the first pass is
        over, the bytes sent past the guest's memory were re-dirtied within `elapsed`."""
        if self.dirty_rate > 0:
            return self.dirty_rate, self.dirty_rate
        resent = self.transferred - self.total if self.resending and elapsed > 0 else 0.0
        at_most = max(self.rate, resent / elapsed if resent else 0.0)
        return (resent / elapsed if resent else 0.0), at_most


def transfer_progress(log_lines: Sequence[str]) -> TransferProgress | None:
    """The latest progress of a task log, None before its first progress line."""
    for line in reversed(log_lines):
        if _DONE.search(line):
            return TransferProgress(0.0, 0.0, 0.0, completed=True)
        progress = _PROGRESS.search(line)
        if progress:
            return TransferProgress(
                _bytes(progress[1], progress[2]),
                _bytes(progress[3], progress[4]),
                _bytes(progress[5], progress[6]),
                dirty_rate=_bytes(progress[7], progress[8]),
            )
    return None


def _bytes(number: str | None, unit: str | None) -> float:
    return float(number) * _UNITS[unit] if number and unit else 0.0


# Every line a migration writes goes through AbstractMigrate's log, which stamps it with the
# node's local time to the second (pve-guest-common `src/PVE/AbstractMigrate.pm` msg2text:
# `strftime("%F %H:%M:%S", localtime)`); the start phase's last login answered when
# PVE::Tunnel logs the tunnel's version (pve-guest-common `src/PVE/Tunnel.pm`
# fork_ssh_tunnel: `ssh tunnel ver 1`). PVE 8 and 9 alike.
_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")
_TUNNEL_UP = re.compile(_STAMPED.pattern + r"ssh tunnel ver \d+$")


def log_clock(line: str) -> float | None:
    """A log line's stamp in seconds, on a scale only good for differences (the node's time
    zone is unknown); None for an unstamped line (ssh's stderr, the TASK line)."""
    stamp = _STAMPED.match(line)
    if stamp is None:
        return None
    return float(calendar.timegm(time.strptime(stamp[1], "%Y-%m-%d %H:%M:%S")))


def first_clock(log_lines: Sequence[str]) -> float | None:
    """The first stamped line's `log_clock`: an HA migration's log begins with the resource
    agent's unstamped `task started by HA resource agent`."""
    return next((c for c in map(log_clock, log_lines) if c is not None), None)


def last_clock(log_lines: Sequence[str]) -> float | None:
    """The last stamped line's `log_clock` (the end line `TASK OK` has none)."""
    return next((c for c in map(log_clock, reversed(log_lines)) if c is not None), None)


def tunnel_up_clock(log_lines: Sequence[str]) -> float | None:
    """When (`log_clock`) the migration's SSH tunnel was up, None if not yet in these lines."""
    for line in log_lines:
        if _TUNNEL_UP.match(line):
            return log_clock(line)
    return None
