"""Local disks and devices of the guests about to be planned, as PVE itself judges them.

`GET /cluster/resources` says nothing about disks or devices, so the one inventory path
(the operator's `ClusterRuntime.refresh_inventory`, which `proxmigrate simulate` uses too)
adds them for the guests a drain or placement is about to plan, from PVE's migration
precondition check, one `GET /nodes/{node}/qemu/{vmid}/migrate` per guest.

Why that call and not `GET .../qemu/{vmid}/config` plus `GET /storage` (shared flags): the
count is the same or lower (one request per guest against one per guest plus one), it needs
no privilege the migration does not (`VM.Migrate`; the other way needs `VM.Audit` and
`Datastore.Audit`), and the verdict is PVE's own `check_local_resources` and
`foreach_volid`, so devices PVE adds later (virtiofs, SEV, TDX, `clipboard=vnc`) and the
rules for CD-ROMs, cloud-init and mapped devices are not re-implemented here.

Disks change rarely, so an answer is kept per guest and re-read only when the guest moved,
started or stopped (the answer depends on both), or after `MAX_AGE` (a disk added
meanwhile). PVE refuses the check for a locked guest (qemu-server `src/PVE/API2/Qemu.pm`
migrate_vm_precondition calls pve-guest-common `src/PVE/AbstractConfig.pm` check_lock: any
lock), so a guest `/cluster/resources` shows locked (its `lock`: pve-manager
`PVE/API2/Cluster.pm` resources) is not asked and keeps the answer held for it: a drain's
passes ask for its node's guests, and once a drain ran past `MAX_AGE` each of its running
migrations (lock `migrate`) was asked every `RETRY_SECONDS`, refused, its answer dropped. A
check refused anyway (locked meanwhile, no `VM.Migrate`) is asked again after
`RETRY_SECONDS`; the guest carries no local disks or devices until then (its migration is
refused for the lock anyway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.errors import PveApiError
from proxmigrate.pve.precondition import MigrationPrecondition

log = logging.getLogger(__name__)

MAX_AGE = 600.0  # seconds an answer is trusted while the guest stays put
RETRY_SECONDS = 30.0  # when a refused check is asked again


@dataclass(frozen=True)
class _Answer:
    node: str
    running: bool
    read_at: float
    check: MigrationPrecondition | None  # None: PVE refused the check


class LocalResources:
    """One cluster's precondition answers by vmid."""

    def __init__(self) -> None:
        self._answers: dict[int, _Answer] = {}

    async def read(
        self, client: AsyncPveClient, inventory: Inventory, wanted: Callable[[VMInfo], bool]
    ) -> Inventory:
        """`inventory` with the local disks and devices of the `wanted` guests, read where
        no usable answer is kept and PVE would not refuse (a locked guest: see the module
        doc), concurrently, bounded by the client's pool."""
        now = inventory.taken_at
        stale = [
            vm for vm in inventory.vms if wanted(vm) and not vm.lock and not self._fresh(vm, now)
        ]
        checks = await asyncio.gather(*(self._check(client, vm) for vm in stale))
        for vm, check in zip(stale, checks, strict=True):
            self._answers[vm.vmid] = _Answer(vm.node, vm.running, now, check)
        known = {vm.vmid for vm in inventory.vms}
        for vmid in [vmid for vmid in self._answers if vmid not in known]:
            del self._answers[vmid]  # the guest is gone
        return self.apply(inventory)

    def apply(self, inventory: Inventory) -> Inventory:
        """`inventory` with what is kept for guests still on the node and in the state the
        answer was given for."""
        return Inventory(
            inventory.nodes, tuple(self._with(vm) for vm in inventory.vms), inventory.taken_at
        )

    def _with(self, vm: VMInfo) -> VMInfo:
        answer = self._answers.get(vm.vmid)
        if answer is None or answer.check is None or not self._same_guest(vm, answer):
            return vm
        check = answer.check
        return replace(
            vm,
            local_disks=check.local_disks,
            local_devices=check.local_devices,
            refused_targets=tuple(
                (node, "; ".join(reasons))
                for node, reasons in sorted(check.not_allowed_nodes.items())
            ),
        )

    @staticmethod
    def _same_guest(vm: VMInfo, answer: _Answer) -> bool:
        return (answer.node, answer.running) == (vm.node, vm.running)

    def _fresh(self, vm: VMInfo, now: float) -> bool:
        answer = self._answers.get(vm.vmid)
        if answer is None or not self._same_guest(vm, answer):
            return False
        return now - answer.read_at < (MAX_AGE if answer.check is not None else RETRY_SECONDS)

    @staticmethod
    async def _check(client: AsyncPveClient, vm: VMInfo) -> MigrationPrecondition | None:
        try:
            return await client.precondition(vm.node, vm.vmid)
        except PveApiError as error:  # locked, no VM.Migrate, just moved: known as unknown
            log.info("precondition check of VM %s on %s refused: %s", vm.vmid, vm.node, error)
            return None
