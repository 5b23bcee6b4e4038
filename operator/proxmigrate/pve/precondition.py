"""`GET /nodes/{node}/qemu/{vmid}/migrate`: what PVE itself says would stop a migration (pure).

The answer is qemu-server's `migrate_vm_precondition` (src/PVE/API2/Qemu.pm). Its shape
changed with qemu-server commit 8aeaad24 (2025-03-11, released in 8.3.9): since then
`allowed_nodes` and `not_allowed_nodes` are always present and `not_allowed_nodes` holds
*every* other node, `{}` for the allowed ones (`check_local_storage_availability` starts
from `{ $node => {} }` for all nodes). Before it, running guests got neither key and stopped
ones the same every-node hash. A node is therefore blocked only by what its entry says:
`unavailable_storages`, `unavailable-resources` (missing mappings) or, in PVE 9,
`blocking-ha-resources`.

`local_disks` lists every volume on node-local storage with `foreach_volid`'s attributes
(`QemuServer.pm`); what a migration does with each is `QemuMigrate.pm` `scan_local_volumes`:
- a path (`/dev/...`), the host's `cdrom` drive, or an ISO on local storage in a CD-ROM
  drive are refused whatever the options ("local file/device", "can't migrate local cdrom
  drive", "local cdrom image");
- cloud-init images and TPM state are "generated": copied offline, no option needed;
- attached disks of a *running* guest are refused without `with-local-disks` ("can't live
  migrate attached local disks without with-local-disks option"); every other local volume
  (unused, snapshot-only, attached to a stopped guest) is copied offline.
`local_resources` lists devices (`check_local_resources` in `QemuMigrate/Helpers.pm`, PVE 9;
`QemuServer.pm`, PVE 8): hostpci/usb/serial (not `socket`)/parallel/virtiofs, ivshmem,
SEV/TDX while running, and PVE 9's `clipboard=vnc`. Mapped devices among them pass
(`prepare`) unless the guest runs and the mapping is not `live-migration` capable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_CLOUDINIT = re.compile(r"vm-\d+-cloudinit")  # scan_local_volumes' own test (PVE 8 has no flag)


@dataclass(frozen=True)
class MigrationPrecondition:
    """What PVE answers for one guest, reduced to what decides a migration."""

    running: bool
    not_allowed_nodes: Mapping[str, tuple[str, ...]]  # blocked node -> why; allowed nodes absent
    local_disks: tuple[str, ...]  # volumes PVE copies to the target (storage migration)
    attached_disks: tuple[str, ...]  # those of them a live migration needs with-local-disks for
    local_devices: tuple[str, ...]  # what PVE refuses to migrate whatever the options

    def blockers(self, target: str, *, with_local_disks: bool = False) -> list[str]:
        """Human-readable reasons the migration to `target` would be refused."""
        found = []
        if self.local_devices:
            found.append(f"uses local devices: {', '.join(self.local_devices)}")
        if self.running and self.attached_disks and not with_local_disks:
            found.append(f"has local disks: {', '.join(self.attached_disks)}")
        if target in self.not_allowed_nodes:
            found.append(f"not allowed on {target}: {'; '.join(self.not_allowed_nodes[target])}")
        return found


def parse_precondition(data: Mapping[str, Any]) -> MigrationPrecondition:
    """Both shapes (see the module docstring); `local_disks` entries may be bare volids."""
    running = _flag(data.get("running"))
    disks: list[str] = []
    attached: list[str] = []
    refused: list[str] = []
    for entry in data.get("local_disks") or ():
        attrs = entry if isinstance(entry, Mapping) else {"volid": entry}
        volid = str(attrs.get("volid"))
        cdrom = _flag(attrs.get("cdrom"))
        if volid.startswith("/") or volid == "cdrom":
            refused.append(f"{volid} (local file/device)")
        elif _flag(attrs.get("is_tpmstate")) or (
            cdrom and (_flag(attrs.get("is_cloudinit")) or _CLOUDINIT.search(volid))
        ):
            continue  # generated: PVE copies it offline on any migration
        elif cdrom:
            refused.append(f"{volid} (local cdrom image)")
        else:
            disks.append(volid)
            if _flag(attrs.get("is_attached", not _flag(attrs.get("is_unused")))):
                attached.append(volid)
    mapped = _mapped_resources(data)
    devices = [
        str(key)
        for key in data.get("local_resources") or ()
        if key not in mapped or (running and not mapped[key])
    ]
    return MigrationPrecondition(
        running=running,
        not_allowed_nodes={
            str(node): reasons
            for node, info in (data.get("not_allowed_nodes") or {}).items()
            if (reasons := _node_reasons(info or {}))
        },
        local_disks=tuple(sorted(disks)),
        attached_disks=tuple(sorted(attached)),
        local_devices=tuple(sorted(devices + refused)),
    )


def _flag(value: Any) -> bool:
    """PVE booleans arrive as 0/1 (or JSON booleans)."""
    return str(value).lower() not in ("", "0", "none", "false")


def _mapped_resources(data: Mapping[str, Any]) -> dict[str, bool]:
    """Mapped device key -> live-migration capable. PVE 9 `mapped-resource-info` (a hash with
    `live-migration`); PVE 8.3 only the `mapped-resources` key list (never live-capable)."""
    info = data.get("mapped-resource-info")
    if isinstance(info, Mapping):
        return {str(key): _flag((value or {}).get("live-migration")) for key, value in info.items()}
    return dict.fromkeys((str(key) for key in data.get("mapped-resources") or ()), False)


def _node_reasons(info: Mapping[str, Any]) -> tuple[str, ...]:
    reasons = [f"storage {storage} unavailable" for storage in info.get("unavailable_storages", ())]
    reasons += [f"mapping {key} missing" for key in info.get("unavailable-resources", ())]
    reasons += [
        f"HA resource {item.get('sid')} blocks ({item.get('cause')})"
        for item in info.get("blocking-ha-resources", ())
        if isinstance(item, Mapping)
    ]
    return tuple(reasons)
