"""Turn PVE API answers into the core's immutable values (pure, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxmigrate.inventory import Inventory, NodeInfo, VMInfo

UNKNOWN = "unknown"  # a datacenter migration type PVE did not show


@dataclass(frozen=True)
class MigrationSettings:
    """The datacenter-wide migration options (datacenter.cfg `migration` and `bwlimit`).

    With token auth these decide the transport of every migration, so the operator checks
    them before each batch (qemu-server `API2/Qemu.pm` `migrate_vm`: `migration_type` is
    root@pam-only; docs/reference/proxmox.md#api-refusals-before-a-task-exists).
    """

    type: str = "secure"  # PVE's default when `migration` is unset; UNKNOWN when hidden
    network: str | None = None
    bwlimit_kib: int | None = None  # KiB/s for migrations, None: unlimited

    @property
    def secure(self) -> bool:
        return self.type == "secure"

    @property
    def hidden(self) -> bool:
        """PVE left the options out of its answer: the caller lacks `Sys.Audit` on `/`."""
        return self.type == UNKNOWN


_TAG_SEPARATORS = re.compile(r"[;,\s]+")


_NO_TAGS: frozenset[str] = frozenset()  # shared: each new empty frozenset costs 216 B


def parse_tags(text: str | None) -> frozenset[str]:
    """PVE stores tags `;`-separated; older clients wrote `,` or spaces."""
    return frozenset(tag for tag in _TAG_SEPARATORS.split(text or "") if tag) or _NO_TAGS


def parse_inventory(resources: Iterable[Mapping[str, Any]], taken_at: float) -> Inventory:
    """Build an Inventory from one `GET /cluster/resources` answer (nodes and qemu guests)."""
    nodes: list[NodeInfo] = []
    vms: list[VMInfo] = []
    for item in resources:
        if item.get("type") == "node":
            nodes.append(
                NodeInfo(
                    name=str(item["node"]),
                    online=item.get("status") == "online",
                    max_memory=int(item.get("maxmem") or 0),
                    used_memory=int(item.get("mem") or 0),
                    max_cpu=int(item.get("maxcpu") or 0),
                    cpu_load=float(item.get("cpu") or 0.0),
                )
            )
        elif item.get("type") == "qemu":
            vms.append(
                VMInfo(
                    vmid=int(item["vmid"]),
                    name=str(item.get("name") or ""),
                    node=str(item["node"]),
                    running=item.get("status") == "running",
                    max_memory=int(item.get("maxmem") or 0),
                    used_memory=int(item.get("mem") or 0),
                    cpus=int(item.get("maxcpu") or 1),
                    template=bool(int(item.get("template") or 0)),
                    tags=parse_tags(item.get("tags")),
                    pool=item.get("pool") or None,
                    ha_state=item.get("hastate") or None,
                    lock=item.get("lock") or None,
                )
            )
    nodes.sort(key=lambda node: node.name)
    vms.sort(key=lambda vm: vm.vmid)
    return Inventory(nodes=tuple(nodes), vms=tuple(vms), taken_at=taken_at)


def _property_string(value: Any) -> dict[str, str]:
    """PVE property strings (`type=secure,network=10.0.0.0/24`) or their parsed form."""
    if isinstance(value, Mapping):
        return {str(key): str(item) for key, item in value.items()}
    pairs = (part.partition("=") for part in str(value or "").split(",") if part)
    return {key.strip(): item.strip() for key, _, item in pairs}


def parse_migration_settings(options: Mapping[str, Any]) -> MigrationSettings:
    """From `GET /cluster/options`: `migration` (default secure) and `bwlimit`.

    Without `Sys.Audit` on `/` PVE still answers 200, with only `console`, `tag-style` and
    `allowed-tags` (pve-manager `PVE/API2/Cluster.pm` get_options, PVE 8 and 9), so a missing
    `migration` would pass for the default. A full answer always has `description`
    (pve-cluster `PVE/DataCenterConfig.pm` parse_datacenter_config sets it, since pve-cluster
    7.0-4): without it the transport is unknown (`hidden`).
    parse_datacenter_config hands `migration` on parsed (an object) and `bwlimit` as the raw
    property string (`migration=512000,default=...`, KiB/s); both forms are read. The legacy
    `migration_unsecure: 1` still means insecure when `migration` does not say.
    """
    if "description" not in options:
        return MigrationSettings(type=UNKNOWN)
    migration = _property_string(options.get("migration"))
    if "type" not in migration and str(options.get("migration_unsecure", "0")) == "1":
        migration["type"] = "insecure"
    bwlimit = _property_string(options.get("bwlimit"))
    # datacenter.cfg: the operation's own limit, else `default` (pve-storage get_bandwidth_limit)
    limit = bwlimit.get("migration") or bwlimit.get("default")
    return MigrationSettings(
        type=migration.get("type", "secure"),
        network=migration.get("network") or None,
        bwlimit_kib=int(float(limit)) if limit else None,
    )
