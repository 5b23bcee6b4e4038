"""Placement planning for VMPlacement: is each selected guest where it should be?

Desired node = the first node of the preference list that can take the guest now: online,
not cordoned, no guest of the same anti-affinity group, and enough usable memory (counting
guests this same call already moves there; guests are decided in vmid order). A guest
already on its desired node is in sync, otherwise it moves there; when no listed node
qualifies it is blocked with each node's reason. So after a drain ends the guest returns
to its first choice, and a cordoned node is never a destination.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.planning.capacity import MemoryReserve, TargetLedger, memory_need, transfer_bytes
from proxmigrate.planning.errors import PlanError
from proxmigrate.planning.selection import DEFAULT_ANTI_AFFINITY_PREFIX, VMSelector
from proxmigrate.planning.units import format_bytes


class PlacementAction(StrEnum):
    IN_SYNC = "in-sync"
    MOVE = "move"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class PlacementRequest:
    """One VMPlacement: exactly one of `vmid`, `name`, `selector`; `nodes` in preference order."""

    nodes: tuple[str, ...]
    vmid: int | None = None
    name: str | None = None
    selector: VMSelector | None = None
    cordoned: frozenset[str] = frozenset()
    reserve: MemoryReserve = field(default_factory=MemoryReserve)
    anti_affinity_prefix: str = DEFAULT_ANTI_AFFINITY_PREFIX


@dataclass(frozen=True)
class PlacementDecision:
    vmid: int
    name: str
    current_node: str
    desired_node: str | None  # None when blocked
    action: PlacementAction
    reason: str
    online: bool
    with_local_disks: bool

    @property
    def in_sync(self) -> bool:
        return self.action is PlacementAction.IN_SYNC


def plan_placement(inventory: Inventory, request: PlacementRequest) -> list[PlacementDecision]:
    """One decision per selected guest, by vmid; PlanError when the request names nothing usable."""
    _check_nodes(inventory, request.nodes)
    guests = _select(inventory, request)
    ledgers = {
        node.name: TargetLedger(
            node, inventory.vms_on(node.name), request.reserve, request.anti_affinity_prefix
        )
        for node in inventory.nodes
        if node.name in request.nodes
    }
    decisions = []
    for vm in guests:
        decision = _decide(vm, request, ledgers)
        if decision.action is PlacementAction.MOVE and decision.desired_node is not None:
            ledgers[decision.desired_node].admit(vm, transfer_bytes(vm))
        decisions.append(decision)
    return decisions


def _check_nodes(inventory: Inventory, nodes: tuple[str, ...]) -> None:
    if not nodes:
        raise PlanError("no node given: set node or nodes")
    unknown = [name for name in nodes if inventory.node(name) is None]
    if unknown:
        known = ", ".join(sorted(n.name for n in inventory.nodes)) or "none"
        raise PlanError(f"node {unknown[0]!r} is not in the cluster (nodes: {known})")


def _select(inventory: Inventory, request: PlacementRequest) -> list[VMInfo]:
    chosen = [x for x in (request.vmid, request.name, request.selector) if x is not None]
    if len(chosen) != 1:
        raise PlanError("name exactly one of vmid, name or selector")
    if request.vmid is not None:
        vm = inventory.vm(request.vmid)
        if vm is None:
            raise PlanError(f"VM {request.vmid} does not exist in the cluster")
        return [vm]
    if request.name is not None:
        named = sorted((vm for vm in inventory.vms if vm.name == request.name), key=_vmid)
        if not named:
            raise PlanError(f"no VM is named {request.name!r}")
        if len(named) > 1:
            found = ", ".join(f"{vm.vmid} on {vm.node}" for vm in named)
            raise PlanError(
                f"name {request.name!r} matches {len(named)} VMs ({found}): select by vmid"
            )
        return named
    assert request.selector is not None
    selected = sorted((vm for vm in inventory.vms if request.selector.matches(vm)), key=_vmid)
    if not selected:
        raise PlanError("selector matches no VM")
    return selected


def _vmid(vm: VMInfo) -> int:
    return vm.vmid


def _decide(
    vm: VMInfo, request: PlacementRequest, ledgers: dict[str, TargetLedger]
) -> PlacementDecision:
    refusals: list[str] = []
    for name in dict.fromkeys(request.nodes):
        ledger = ledgers[name]
        refusal = _refusal(vm, ledger, request.cordoned)
        if refusal is not None:
            refusals.append(f"{name} {refusal}")
        elif name == vm.node:
            return _decision(vm, name, PlacementAction.IN_SYNC, f"on {name}")
        elif vm.local_devices:
            devices = ", ".join(vm.local_devices)
            reason = f"should move to {name} but uses local devices ({devices}): PVE refuses"
            return _decision(vm, None, PlacementAction.BLOCKED, reason)
        else:
            return _decision(vm, name, PlacementAction.MOVE, f"{vm.node} -> {name}")
    return _decision(
        vm, None, PlacementAction.BLOCKED, "no desired node usable: " + "; ".join(refusals)
    )


def _refusal(vm: VMInfo, ledger: TargetLedger, cordoned: frozenset[str]) -> str | None:
    """Why `ledger`'s node cannot hold `vm` now, or None. The current node always fits."""
    if not ledger.node.online:
        return "offline"
    if ledger.name in cordoned:
        return "cordoned by a NodeDrain"
    if ledger.name == vm.node:
        return None
    refusal = vm.target_refusal(ledger.name)
    if refusal is not None:
        return f"refused by PVE ({refusal})"
    conflict = ledger.anti_affinity_conflict(vm)
    if conflict is not None:
        return f"holds anti-affinity {conflict}"
    if not ledger.fits(vm):
        return f"has {format_bytes(ledger.free_memory)} free, needs {format_bytes(memory_need(vm))}"
    return None


def _decision(
    vm: VMInfo, desired: str | None, action: PlacementAction, reason: str
) -> PlacementDecision:
    return PlacementDecision(
        vmid=vm.vmid,
        name=vm.name,
        current_node=vm.node,
        desired_node=desired,
        action=action,
        reason=reason,
        online=vm.running,
        with_local_disks=bool(vm.local_disks),
    )
