"""`GET /nodes/{node}/qemu/{vmid}/migrate` as qemu-server's `migrate_vm_precondition` answers.

Sources (qemu-server): `src/PVE/API2/Qemu.pm` `migrate_vm_precondition` and
`$check_vm_disks_local`; `QemuServer.pm` `foreach_volid` (the per-volume attributes) and
`check_local_storage_availability`; `QemuMigrate/Helpers.pm` (PVE 9) or `QemuServer.pm`
(PVE 8) `check_local_resources`.

- PVE 9 (and 8.3.9+, commit 8aeaad24 of 2025-03-11): `allowed_nodes` and
  `not_allowed_nodes` always; the latter holds every other node, `{}` when allowed.
  `mapped-resource-info` (commit 0f55e8be), `has-dbus-vmstate` (9.0, dc76a590) and, for HA
  guests, `dependent-ha-resources` (96607104).
- PVE 8 (8.3.1, commit 30587be4): both node keys only for a stopped guest (the same
  every-node hash); `mapped-resources` is the only mapping field; no `is_cloudinit`.
- `target` is accepted and unused by both. The guest's lock is checked first
  (`check_lock`: "VM is locked (backup)"), after the quorum check.

The model knows no storage `nodes` restrictions or device mappings, so every other node is
allowed and the mapping fields are empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pvesim.model.errors import ApiError

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.entities import VM, Disk


def migrate_precondition(cluster: Cluster, vm: VM) -> dict[str, Any]:
    if not cluster.has_quorum():
        raise ApiError(500, "cluster not ready - no quorum?")  # PVE::Cluster::check_cfs_quorum
    if vm.lock:
        raise ApiError(500, f"VM is locked ({vm.lock})")  # AbstractConfig.pm check_lock
    pve9 = cluster.params.pve_version >= 9
    result: dict[str, Any] = {"running": 1 if vm.running else 0}
    if pve9 or not vm.running:
        others = [name for name in cluster.nodes if name != vm.node]
        result["allowed_nodes"] = others
        result["not_allowed_nodes"] = {name: {} for name in others}
    result["local_disks"] = [_volume(disk, pve9) for disk in vm.disks if not disk.shared]
    result["local_resources"] = list(vm.local_devices)
    result["mapped-resources"] = []
    if pve9:
        result["mapped-resource-info"] = {}
        result["has-dbus-vmstate"] = 1
        if vm.ha_managed:
            result["dependent-ha-resources"] = []
    return result


def _volume(disk: Disk, pve9: bool) -> dict[str, Any]:
    """`foreach_volid`'s attributes of one volume that is in the current config only."""
    attrs: dict[str, Any] = {
        "volid": disk.volid,
        "cdrom": 1 if disk.cdrom else 0,
        "replicate": 1,
        "shared": 0,
        "is_unused": 1 if disk.unused else 0,
        "is_attached": 0 if disk.unused else 1,
        "is_vmstate": 0,
        "is_tpmstate": 1 if disk.key == "tpmstate0" else 0,
    }
    if pve9:
        attrs["is_cloudinit"] = 1 if disk.cdrom and "cloudinit" in disk.volname else 0
    if not disk.cdrom:
        attrs["size"] = disk.size
    if not disk.unused:
        attrs["drivename"] = disk.key
    return attrs
