"""datacenter.cfg as pve-cluster `src/PVE/DataCenterConfig.pm` parse_datacenter_config hands
it on (docs/reference/proxmox.md#datacenter-options)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# DataCenterConfig.pm $PROXMOX_OUI: filled in when unset since pve-cluster 8.0.5 (PVE 8.1,
# commit e6c91e0 "datacenter config: avoid writing out default MAC prefix")
PROXMOX_OUI = "BC:24:11"


@dataclass
class Datacenter:
    migration_type: str = "secure"  # absent `migration` option means secure
    migration_network: str | None = None
    migration_set: bool = False  # `migration:` present in datacenter.cfg
    bwlimit: str | None = None  # the raw property string, e.g. `migration=512000`
    max_workers: int | None = None  # default for migrateall's maxworkers
    description: str = ""  # the file's `#` comment lines

    @property
    def bwlimit_migration_kib(self) -> int | None:
        """The migration limit datacenter.cfg sets: its `migration`, else its `default`
        (pve-storage `src/PVE/Storage.pm` get_bandwidth_limit)."""
        limits = _property_string(self.bwlimit)
        limit = limits.get("migration") or limits.get("default")
        return int(float(limit)) if limit else None

    def options(self, guest_tags: Iterable[str] = ()) -> dict[str, object]:
        """`GET /cluster/options` with `Sys.Audit` on `/` (pve-manager `PVE/API2/Cluster.pm`
        get_options): the parsed file, i.e. `description` and `mac_prefix` always,
        `migration` parsed into an object, `bwlimit` as its raw string; plus `allowed-tags`
        (pve-guest-common `GuestHelpers.pm` get_allowed_tags: for a user with `Sys.Modify`
        on `/`, every guest's tags, sorted)."""
        data: dict[str, object] = {"description": self.description, "mac_prefix": PROXMOX_OUI}
        if self.migration_set:
            migration: dict[str, object] = {"type": self.migration_type}
            if self.migration_network:
                migration["network"] = self.migration_network
            data["migration"] = migration
        if self.bwlimit:
            data["bwlimit"] = self.bwlimit
        if self.max_workers:
            data["max_workers"] = self.max_workers
        data["allowed-tags"] = sorted(set(guest_tags))
        return data

    @classmethod
    def parse(cls, config: dict[str, object]) -> Datacenter:
        """From the cluster YAML's `datacenter:` (PVE property-string syntax accepted)."""
        dc = cls()
        if config.get("migration") is not None:
            migration = _property_string(config["migration"])
            dc.migration_set = True
            dc.migration_type = str(migration.get("type", "secure"))
            dc.migration_network = migration.get("network")
        if config.get("bwlimit") is not None:
            dc.bwlimit = ",".join(
                f"{k}={v}" for k, v in _property_string(config["bwlimit"]).items()
            )
        if config.get("max_workers"):
            dc.max_workers = int(config["max_workers"])  # type: ignore[call-overload]
        if config.get("description"):
            dc.description = str(config["description"])
        return dc


def _property_string(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    pairs = (item.split("=", 1) for item in str(value).split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}
