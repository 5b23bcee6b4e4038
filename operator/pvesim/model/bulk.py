"""`migrateall` exactly as pve-manager's Nodes.pm runs it (docs/reference/proxmox.md#migrateall)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvesim.model.errors import ApiError
from pvesim.model.process import Sleep, Worker

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.tasklog import Task


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
    """Start one worker per guest, throttled by counting live workers; never read results."""
    guests = [
        v for v in cluster.vms.values() if v.node == node and (only is None or v.vmid in only)
    ]
    if not guests:
        task.raw("no virtual guests matched, nothing to do..")
        task.finish(cluster.now)
        return
    workers: list[Task] = []
    started = 0
    for vmid in sorted(str(v.vmid) for v in guests):  # Perl `sort keys`: string order
        vm = cluster.vms[int(vmid)]
        problems = ""
        if vm.local_disks and not with_local_disks:
            problems += "\n  Has local disks: " + ", ".join(d.volid for d in vm.local_disks)
        if vm.local_devices:
            problems += "\n  Has local resources: " + ", ".join(vm.local_devices)
        if problems:
            task.raw(f"skip VM {vmid} - precondition check failed:")
            task.lines.extend(problems.lstrip("\n").split("\n"))
            continue
        task.raw("precondition check passed")
        task.raw(f"Migrating VM {vmid}")
        try:
            upid = cluster.migrate(
                vm.node,
                vm.vmid,
                target,
                user=user,
                online=vm.running,
                with_local_disks=bool(with_local_disks),
            )
        except ApiError as exc:
            task.raw(exc.message)
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
    task.raw(f"All jobs finished, used {started} workers in total.")
    task.finish(cluster.now)
