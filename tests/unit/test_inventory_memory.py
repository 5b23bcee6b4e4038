"""An inventory of thousands of guests is held (and re-read) all the time: its size counts."""

from __future__ import annotations

import tracemalloc

from proxmigrate.pve.resources import parse_inventory

GUESTS = 5000


def test_a_guest_costs_under_300_bytes() -> None:
    """A VMInfo with a __dict__ and its own empty tag set took ~460 B; slots and one shared
    empty set ~190 B."""
    items = [
        {"type": "qemu", "vmid": 100 + i, "name": f"vm{i}", "node": "pve1", "status": "running"}
        for i in range(GUESTS)
    ]
    tracemalloc.start()
    try:
        inventory = parse_inventory(items, taken_at=0.0)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(inventory.vms) == GUESTS
    assert size / GUESTS < 300, size / GUESTS
    assert {vm.tags for vm in inventory.vms} == {frozenset()}
