"""`migrateall` as pve-manager's `PVE/API2/Nodes.pm` runs it (docs/reference/proxmox.md#migrateall).

The worker (sub `migrateall`, `$create_migrate_worker`) asks `migrate_vm_precondition` per
guest, in `sort keys` (string) order, skips only what it would refuse (a *running* guest
with local disks unless `with-local-disks`, local resources; a stopped guest with local disks
is migrated offline), starts `migrate_vm` and throttles by counting live worker PIDs every
second; it never reads their results. What it prints goes to STDERR, i.e. raw into the log,
and `Check VM N: ` has no newline, so the verdict continues that line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvesim.model.errors import ApiError
from pvesim.model.process import Sleep, Worker

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.entities import VM
    from pvesim.model.tasklog import Task


class _Stderr:
    """The worker's STDERR in the task log: complete lines only, a partial one kept."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.partial = ""

    def write(self, text: str) -> None:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.task.raw(line)


def migrateall_worker(
    cluster: Cluster,
    task: Task,
    node: str,
    target: str,
    max_workers: int,
    only: list[int] | None,
    with_local_disks: bool | None,
    user: str,
) -> Worker:
    """Start one worker per guest (templates and HA guests included: get_filtered_vmlist with
    both flags set), throttled by counting live workers."""
    guests = [
        v for v in cluster.vms.values() if v.node == node and (only is None or v.vmid in only)
    ]
    err = _Stderr(task)
    if not guests:
        err.write("no virtual guests matched, nothing to do..\n")
        task.finish(cluster.now)
        return
    workers: list[Task] = []
    started = 0
    for vmid in sorted(str(v.vmid) for v in guests):  # Perl `sort keys`: string order
        try:
            upid = _migrate(cluster, err, cluster.vms[int(vmid)], target, with_local_disks, user)
        except ApiError as exc:  # `warn $@` continues the current line
            err.write(exc.message.rstrip("\n") + "\n")
            continue
        started += 1
        workers.append(cluster.tasks[upid])
        while len(workers) >= max_workers:
            workers = [w for w in workers if w.running]
            yield Sleep(cluster.params.timing.migrateall_poll)
    while workers:
        workers = [w for w in workers if w.running]
        yield Sleep(cluster.params.timing.migrateall_poll)
    if started <= 0:
        task.finish(cluster.now, "no migrations worker started...")
        return
    err.write(f"All jobs finished, used {started} workers in total.\n")
    task.finish(cluster.now)


def _migrate(
    cluster: Cluster,
    err: _Stderr,
    vm: VM,
    target: str,
    with_local_disks: bool | None,
    user: str,
) -> str:
    """`$create_migrate_worker` for a QEMU guest: the precondition check, then migrate_vm."""
    err.write(f"Check VM {vm.vmid}: ")
    online = vm.running
    pre = cluster.migrate_precondition(vm.node, vm.vmid)
    problems = ""
    if online and not with_local_disks and pre["local_disks"]:
        problems += "\n  Has local disks: " + ", ".join(d["volid"] for d in pre["local_disks"])
    if pre["local_resources"]:
        problems += "\n  Has local resources: " + ", ".join(pre["local_resources"])
    blocked = (pre.get("not_allowed_nodes") or {}).get(target) or {}
    if blocked.get("unavailable_storages"):
        problems += "\n  Has unavailable storages: " + ", ".join(blocked["unavailable_storages"])
    if blocked.get("unavailable-resources"):
        problems += "\n  Has unavailable resources: " + ", ".join(blocked["unavailable-resources"])
    if problems:
        err.write(f"skip VM {vm.vmid} - precondition check failed:")
        raise ApiError(500, problems + "\n")
    err.write("precondition check passed\n")
    err.write(f"Migrating VM {vm.vmid}\n")
    return cluster.migrate(
        vm.node,
        vm.vmid,
        target,
        user=user,
        online=online,
        with_local_disks=bool(with_local_disks),
    )
