"""A drain entry is parsed once from its status document and written back unchanged."""

from __future__ import annotations

import pytest
import yaml

from proxmigrate.api.enums import DrainVMPhase
from proxmigrate.status.drain import count
from proxmigrate.status.drain_entry import DrainEntry
from tests.support.controlplane import REPO_ROOT

FULL = {
    "vmid": 101,
    "name": "web",
    "memoryBytes": 2048,
    "from": "pve1",
    "to": "pve2",
    "order": 3,
    "phase": "Failed",
    "migration": "drain-a-101",
    "reason": "ssh_dropped",
    "returnPhase": "ReturnSkipped",
    "returnMigration": "drain-a-ret-101",
    "returnReason": "a VMPlacement pins it to pve3, not pve1",
}


def test_an_entry_round_trips_every_field_the_crd_defines() -> None:
    crd = yaml.safe_load((REPO_ROOT / "crds" / "nodedrains.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["status"]["properties"]["vms"]["items"]["properties"]
    assert set(FULL) == set(fields)
    entry = DrainEntry.parse(FULL)
    assert (entry.vmid, entry.phase, entry.source, entry.target) == (
        101,
        DrainVMPhase.FAILED,
        "pve1",
        "pve2",
    )
    assert entry.document() == FULL
    skipped = {"vmid": 7, "from": "pve1", "phase": "Skipped", "reason": "template"}
    assert DrainEntry.parse(skipped).document() == skipped


def test_an_unknown_phase_is_refused_when_parsed() -> None:
    with pytest.raises(ValueError):
        DrainEntry.parse({**FULL, "phase": "Moving"})


def test_counts_come_from_typed_entries() -> None:
    entries = [
        DrainEntry.parse({**FULL, "phase": "Migrated"}),
        DrainEntry.parse({**FULL, "vmid": 102, "phase": "Cancelled"}),
        DrainEntry.parse({**FULL, "vmid": 103, "phase": "Migrating"}),
    ]
    counts = count(entries)
    assert (counts.migrated, counts.failed, counts.running, counts.remaining) == (1, 1, 1, 1)
    assert (counts.memory_total, counts.memory_migrated) == (6144, 2048)
