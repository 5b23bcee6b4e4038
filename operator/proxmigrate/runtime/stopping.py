"""Stopping a running migration's PVE task, and saying what it left behind."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxmigrate.pve.errors import PveError
from proxmigrate.pve.upid import parse_upid
from proxmigrate.runtime.attempt import Attempt

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)


async def stop_task(rt: ClusterRuntime, attempt: Attempt, what: str) -> tuple[list[str], bool]:
    """Stop a running migration's task (if it has one); say what it left behind, and
    whether any of it needs a human.

    PVE answers the DELETE once the worker is gone: SIGTERM to its process group, SIGKILL
    5 s later (pve-common `PVE/RESTEnvironment.pm` check_worker, kill_process_group), so
    its cleanup can be cut short (qemu-server `PVE/QemuMigrate.pm` phase2_cleanup,
    phase3_cleanup). Then one task list and one inventory read tell (docs/reference/
    proxmox.md#stopping-a-task): a config still locked `migrate` is unlocked when PVE
    lets us (`skiplock` is root@pam's only) and reported otherwise; a task killed by
    SIGKILL (exit status `unexpected status`, pve-common `PVE/UPID.pm` read_status) may
    have left the target's incoming QEMU running, which no API call shows.
    """
    if not attempt.upid:
        return [], False
    upid = parse_upid(attempt.upid)
    request = attempt.request
    try:
        await rt.client.stop_task(upid.node, attempt.upid)
        rows = await rt.client.tasks(upid.node, since=upid.starttime, vmid=request.vmid)
        vm = (await rt.refresh_inventory()).vm(request.vmid)
    except PveError as error:
        log.warning("%s %s failed: %s", what, attempt.upid, error)
        return [f"stopping it failed ({error}): check VM {request.vmid} on its nodes"], True
    notes: list[str] = []
    attention = False
    if any(
        row.get("upid") == attempt.upid and row.get("status") == "unexpected status" for row in rows
    ):
        attention = True
        notes.append(
            f"PVE killed the task before its cleanup ended: an incoming VM {request.vmid} "
            f"may still run on {request.target} (stop its QEMU there: "
            f"kill $(cat /var/run/qemu-server/{request.vmid}.pid))"
        )
    if vm is not None and vm.lock == "migrate":
        try:
            await rt.client.unlock_vm(vm.node, request.vmid)
            notes.append(f"stale 'migrate' lock of VM {request.vmid} on {vm.node} cleared")
        except PveError as error:
            attention = True
            notes.append(
                f"VM {request.vmid} keeps lock 'migrate' on {vm.node} (clearing it failed: "
                f"{error}); run 'qm unlock {request.vmid}' there"
            )
    if vm is not None and vm.node == request.target:
        notes.append(f"VM {request.vmid} had already moved to {vm.node}")
    return notes, attention
