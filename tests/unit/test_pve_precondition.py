"""`parse_precondition` on the answers qemu-server's `migrate_vm_precondition` gives.

The answers are written from qemu-server's code (`src/PVE/API2/Qemu.pm`, `QemuServer.pm`
`foreach_volid`, `QemuMigrate/Helpers.pm` `check_local_resources`) at 9.2.6 (HEAD) and at
8.3.1 (commit 30587be4); the shape changed with commit 8aeaad24 (2025-03-11, in 8.3.9).
"""

from __future__ import annotations

from typing import Any

from proxmigrate.pve.precondition import parse_precondition


def disk(volid: str, **attrs: int) -> dict[str, Any]:
    """One `local_disks` entry: every attribute `foreach_volid` sets, as PVE 9 sends it."""
    entry: dict[str, Any] = {
        "volid": volid,
        "cdrom": 0,
        "is_cloudinit": 0,
        "replicate": 1,
        "shared": 0,
        "is_unused": 0,
        "is_attached": 1,
        "size": 34359738368,
        "is_vmstate": 0,
        "is_tpmstate": 0,
        "drivename": "scsi1",
    }
    entry.update(attrs)
    return entry


def pve9(running: int, **extra: Any) -> dict[str, Any]:
    """A PVE 9 answer on pve1 of a three-node cluster: every other node listed, `{}` if allowed."""
    answer: dict[str, Any] = {
        "running": running,
        "allowed_nodes": ["pve2", "pve3"],
        "not_allowed_nodes": {"pve2": {}, "pve3": {}},
        "local_disks": [],
        "local_resources": [],
        "mapped-resources": [],
        "mapped-resource-info": {},
        "has-dbus-vmstate": 1,
    }
    answer.update(extra)
    return answer


def test_pve9_lists_allowed_nodes_as_empty_entries_and_none_is_blocked() -> None:
    check = parse_precondition(pve9(1))
    assert check.not_allowed_nodes == {}
    assert check.blockers("pve2") == [] and check.blockers("pve3") == []


def test_pve9_blocked_node_names_its_storage_mapping_and_ha_reasons() -> None:
    check = parse_precondition(
        pve9(
            0,
            allowed_nodes=["pve2"],
            not_allowed_nodes={
                "pve2": {},
                "pve3": {
                    "unavailable_storages": ["fast"],
                    "unavailable-resources": ["hostpci0"],
                    "blocking-ha-resources": [{"sid": "vm:101", "cause": "resource-affinity"}],
                },
            },
        )
    )
    assert check.blockers("pve2") == []
    assert check.blockers("pve3") == [
        "not allowed on pve3: storage fast unavailable; mapping hostpci0 missing; "
        "HA resource vm:101 blocks (resource-affinity)"
    ]


def test_pve8_running_guest_has_no_node_lists() -> None:
    check = parse_precondition(
        {"running": 1, "local_disks": [], "local_resources": [], "mapped-resources": []}
    )
    assert check.running and check.not_allowed_nodes == {} and check.blockers("pve2") == []


def test_pve8_stopped_guest_lists_every_node_too() -> None:
    check = parse_precondition(
        {
            "running": 0,
            "allowed_nodes": ["pve2"],
            "not_allowed_nodes": {"pve2": {}, "pve3": {"unavailable_storages": ["fast"]}},
            "local_disks": [],
            "local_resources": [],
            "mapped-resources": [],
        }
    )
    assert list(check.not_allowed_nodes) == ["pve3"]
    assert check.blockers("pve2") == []


def test_volumes_are_sorted_as_scan_local_volumes_treats_them() -> None:
    check = parse_precondition(
        pve9(
            1,
            local_disks=[
                disk("local-lvm:vm-100-disk-1"),
                disk("local-lvm:vm-100-disk-2", is_unused=1, is_attached=0),
                disk("local-lvm:vm-100-cloudinit", cdrom=1, is_cloudinit=1, drivename="ide2"),
                disk("local-lvm:vm-100-disk-3", is_tpmstate=1, drivename="tpmstate0"),
                disk("local:iso/debian-12.iso", cdrom=1, drivename="ide0"),
                disk("/dev/disk/by-id/ata-X", drivename="scsi5"),
                disk("cdrom", cdrom=1, drivename="ide1"),
            ],
            local_resources=["hostpci0", "serial1"],
        )
    )
    assert check.local_disks == ("local-lvm:vm-100-disk-1", "local-lvm:vm-100-disk-2")
    assert check.attached_disks == ("local-lvm:vm-100-disk-1",)
    assert check.local_devices == (
        "/dev/disk/by-id/ata-X (local file/device)",
        "cdrom (local file/device)",
        "hostpci0",
        "local:iso/debian-12.iso (local cdrom image)",
        "serial1",
    )


def test_pve8_cloudinit_is_known_by_its_volume_name() -> None:
    entry = disk("local-lvm:vm-100-cloudinit", cdrom=1)
    del entry["is_cloudinit"]  # qemu-server 8.3 sets no such flag
    check = parse_precondition({"running": 1, "local_disks": [entry], "local_resources": []})
    assert check.local_disks == () and check.local_devices == ()


def test_attached_local_disks_block_only_a_live_migration_without_the_option() -> None:
    running = parse_precondition(pve9(1, local_disks=[disk("local-lvm:vm-100-disk-1")]))
    assert running.blockers("pve2") == ["has local disks: local-lvm:vm-100-disk-1"]
    assert running.blockers("pve2", with_local_disks=True) == []
    stopped = parse_precondition(pve9(0, local_disks=[disk("local-lvm:vm-100-disk-1")]))
    assert stopped.blockers("pve2") == []  # copied offline (QemuMigrate.pm sync_offline_...)
    assert stopped.local_disks == ("local-lvm:vm-100-disk-1",)


def test_mapped_devices_pass_unless_running_without_live_migration() -> None:
    mapped = {"hostpci1": {"name": "gpu"}, "usb0": {"name": "key", "live-migration": 1}}
    # check_local_resources: a mapped hostpci of a stopped guest is not listed, usb always is
    stopped = parse_precondition(
        pve9(0, local_resources=["usb0"], **{"mapped-resource-info": mapped})
    )
    assert stopped.local_devices == ()
    running = parse_precondition(
        pve9(1, local_resources=["hostpci1", "usb0"], **{"mapped-resource-info": mapped})
    )
    assert running.local_devices == ("hostpci1",)
    pve8 = parse_precondition(
        {"running": 1, "local_resources": ["hostpci1"], "mapped-resources": ["hostpci1"]}
    )
    assert pve8.local_devices == ("hostpci1",)


def test_bare_volids_count_as_attached_disks() -> None:
    check = parse_precondition({"running": 1, "local_disks": ["local-lvm:vm-1-disk-0"]})
    assert check.attached_disks == ("local-lvm:vm-1-disk-0",)
