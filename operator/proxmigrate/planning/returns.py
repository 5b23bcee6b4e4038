"""Return home: the guests a drain moved go back to the node they left (pure).

Called when a node's maintenance is over, on the inventory as it is then: a guest goes back
only if it still sits where the drain parked it, no VMPlacement pins it away from home, and
home can take it (online, not cordoned, not refused by PVE, no anti-affinity conflict,
enough usable memory after the reserve, counting the returns already booked there and the
cluster's other moves in flight, `DrainRequest.in_flight`). Guests
are booked largest first, as the drain places them, so big guests are not squeezed out by
small ones; the moves then keep the order the guests left in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.planning.capacity import TargetLedger, memory_need, transfer_bytes
from proxmigrate.planning.drain import DrainRequest
from proxmigrate.planning.drain_plan import PlannedMove, SkippedVM
from proxmigrate.planning.projection import with_pending_moves
from proxmigrate.planning.units import format_bytes


@dataclass(frozen=True)
class Departure:
    """A guest a drain moved: from `home` to `parked`."""

    vmid: int
    home: str
    parked: str


@dataclass(frozen=True)
class ReturnPlan:
    """Every departure appears once: in `moves` (source = parked, target = home) or `skipped`."""

    moves: tuple[PlannedMove, ...] = ()
    skipped: tuple[SkippedVM, ...] = ()

    @property
    def total_transfer_bytes(self) -> int:
        return sum(move.transfer_bytes for move in self.moves)


def departures_of(moves: Iterable[PlannedMove]) -> tuple[Departure, ...]:
    """The departures a drain plan's moves make, in their order."""
    return tuple(Departure(move.vmid, move.source, move.target) for move in moves)


def plan_return(
    inventory: Inventory, departures: Iterable[Departure], options: DrainRequest
) -> ReturnPlan:
    """Which departed guests go home now, and why the others stay.

    `options` is the drain's request: its reserve, anti-affinity prefix, pins (VMPlacements)
    and cordoned nodes apply; its node and targets do not.
    """
    ordered = list(dict.fromkeys(departures))
    returning = {departure.vmid for departure in ordered}  # their own moves home may be queued
    inventory = with_pending_moves(
        inventory,
        {vmid: node for vmid, node in options.in_flight.items() if vmid not in returning},
    )
    ledgers: dict[str, TargetLedger] = {}
    skipped: list[SkippedVM] = []
    booked: set[int] = set()
    known = _known(inventory, ordered, skipped)
    for departure, vm in sorted(known, key=_largest_first):
        ledger = ledgers.get(departure.home)
        if ledger is None and (home := inventory.node(departure.home)) is not None:
            ledger = ledgers[departure.home] = TargetLedger(
                home,
                inventory.vms_on(departure.home),
                options.reserve,
                options.anti_affinity_prefix,
            )
        reason = _refusal(departure, vm, ledger, options)
        if reason is not None:
            skipped.append(SkippedVM(vm.vmid, vm.name, reason))
            continue
        assert ledger is not None  # _refusal refuses an unknown home
        ledger.admit(vm, transfer_bytes(vm))
        booked.add(vm.vmid)
    moves = [
        PlannedMove(
            vmid=vm.vmid,
            name=vm.name,
            memory_bytes=memory_need(vm),
            transfer_bytes=transfer_bytes(vm),
            source=vm.node,
            target=departure.home,
            order=order,
            online=vm.running,
            with_local_disks=bool(vm.local_disks),
        )
        for order, (departure, vm) in enumerate(
            (departure, vm) for departure, vm in known if vm.vmid in booked
        )
    ]
    return ReturnPlan(tuple(moves), tuple(sorted(skipped, key=lambda vm: vm.vmid)))


def _known(
    inventory: Inventory, departures: list[Departure], skipped: list[SkippedVM]
) -> list[tuple[Departure, VMInfo]]:
    """Departures whose guest still exists; the others are added to `skipped`."""
    known = []
    for departure in departures:
        vm = inventory.vm(departure.vmid)
        if vm is None:
            skipped.append(SkippedVM(departure.vmid, "", "no longer in the cluster"))
        else:
            known.append((departure, vm))
    return known


def _largest_first(item: tuple[Departure, VMInfo]) -> tuple[int, int]:
    return (-memory_need(item[1]), item[1].vmid)


def _refusal(
    departure: Departure, vm: VMInfo, home: TargetLedger | None, options: DrainRequest
) -> str | None:
    """Why `vm` does not go home now, or None."""
    if vm.node == departure.home:
        return f"already on {departure.home}"
    if vm.node != departure.parked:
        return f"moved again meanwhile: on {vm.node}, the drain parked it on {departure.parked}"
    pin = options.pins.get(vm.vmid)
    if pin is not None and departure.home not in pin:
        return f"a VMPlacement pins it to {', '.join(pin)}, not {departure.home}"
    if home is None:
        return f"home node {departure.home} is no longer in the cluster"
    if not home.node.online:
        return f"home node {departure.home} is offline"
    if departure.home in options.cordoned:
        return f"home node {departure.home} is cordoned by a NodeDrain"
    refusal = vm.target_refusal(departure.home)
    if refusal is not None:
        return f"PVE refuses {departure.home} ({refusal})"
    conflict = home.anti_affinity_conflict(vm)
    if conflict is not None:
        return f"{departure.home} holds anti-affinity {conflict}"
    if not home.fits(vm):
        return (
            f"no longer fits: needs {format_bytes(memory_need(vm))}, "
            f"{departure.home} has {format_bytes(home.free_memory)} free"
        )
    return None
