"""pvesim's `GET /nodes/{node}/qemu/{vmid}/migrate` as qemu-server answers it, PVE 9 (9.2.6) and
PVE 8 (8.3.1, before commit 8aeaad24): node lists, volume attributes, lock refusal; and the
adapter reads both the same way."""

from __future__ import annotations

from typing import Any

import pytest

from proxmigrate.pve.precondition import parse_precondition
from pvesim.model import ApiError, from_config

DISKS = [
    {"key": "scsi0", "storage": "ceph"},
    {"key": "scsi1", "storage": "local-lvm", "size_gib": 8},
    {"key": "unused0", "storage": "local-lvm", "size_gib": 4},
    {"key": "ide2", "storage": "local", "volname": "iso/debian.iso", "cdrom": True},
    {"key": "ide0", "storage": "local-lvm", "volname": "vm-100-cloudinit", "cdrom": True},
]


def answer(pve_version: int, running: bool, **vm: Any) -> dict[str, Any]:
    config = {
        "pve_version": pve_version,
        "nodes": [{"name": name} for name in ("pve1", "pve2", "pve3")],
        "vms": [{"vmid": 100, "node": "pve1", "running": running, "disks": DISKS, **vm}],
    }
    return from_config(config).migrate_precondition("pve1", 100)


@pytest.mark.parametrize("running", [True, False])
def test_pve9_lists_every_other_node_empty_when_allowed(running: bool) -> None:
    real = answer(9, running)
    assert real["allowed_nodes"] == ["pve2", "pve3"]
    assert real["not_allowed_nodes"] == {"pve2": {}, "pve3": {}}
    assert real["has-dbus-vmstate"] == 1 and real["mapped-resource-info"] == {}
    assert parse_precondition(real).blockers("pve2", with_local_disks=True) == [
        "uses local devices: local:iso/debian.iso (local cdrom image)"
    ]


def test_pve8_lists_nodes_only_for_a_stopped_guest() -> None:
    running, stopped = answer(8, True), answer(8, False)
    assert "allowed_nodes" not in running and "not_allowed_nodes" not in running
    assert stopped["not_allowed_nodes"] == {"pve2": {}, "pve3": {}}
    assert "mapped-resource-info" not in running and "has-dbus-vmstate" not in running
    assert all("is_cloudinit" not in disk for disk in running["local_disks"])
    assert parse_precondition(running) == parse_precondition(answer(9, True))


def test_volumes_carry_foreach_volid_attributes() -> None:
    disks = {disk["volid"]: disk for disk in answer(9, True)["local_disks"]}
    assert sorted(disks) == [
        "local-lvm:vm-100-cloudinit",
        "local-lvm:vm-100-disk-1",
        "local-lvm:vm-100-disk-2",
        "local:iso/debian.iso",
    ]  # not the ceph disk: shared storage
    attached, unused = disks["local-lvm:vm-100-disk-1"], disks["local-lvm:vm-100-disk-2"]
    assert (attached["is_attached"], attached["is_unused"], attached["drivename"]) == (
        1,
        0,
        "scsi1",
    )
    assert (unused["is_attached"], unused["is_unused"], "drivename" in unused) == (0, 1, False)
    assert disks["local-lvm:vm-100-cloudinit"]["is_cloudinit"] == 1
    assert disks["local:iso/debian.iso"]["cdrom"] == 1
    check = parse_precondition(answer(9, True))
    assert check.local_disks == ("local-lvm:vm-100-disk-1", "local-lvm:vm-100-disk-2")
    assert check.attached_disks == ("local-lvm:vm-100-disk-1",)


def test_a_locked_guest_is_refused_as_check_lock_does() -> None:
    with pytest.raises(ApiError) as refused:
        answer(9, True, lock="backup")
    assert (refused.value.status, refused.value.message) == (500, "VM is locked (backup)")
