"""datacenter.cfg options that change migrations (docs/reference/proxmox.md#datacenter-options)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Datacenter:
    migration_type: str = "secure"  # absent `migration` option means secure
    migration_network: str | None = None
    bwlimit_migration_kib: int | None = None  # `bwlimit: migration=<KiB/s>`
    max_workers: int | None = None  # default for migrateall's maxworkers

    def options(self) -> dict[str, object]:
        """`GET /cluster/options` as PVE renders these properties."""
        data: dict[str, object] = {}
        migration: dict[str, object] = {"type": self.migration_type}
        if self.migration_network:
            migration["network"] = self.migration_network
        data["migration"] = migration
        if self.bwlimit_migration_kib:
            data["bwlimit"] = {"migration": self.bwlimit_migration_kib}
        if self.max_workers:
            data["max_workers"] = self.max_workers
        return data

    @classmethod
    def parse(cls, config: dict[str, object]) -> Datacenter:
        """From the cluster YAML's `datacenter:` (PVE property-string syntax accepted)."""
        dc = cls()
        migration = _property_string(config.get("migration"))
        dc.migration_type = str(migration.get("type", "secure"))
        dc.migration_network = migration.get("network")
        bwlimit = _property_string(config.get("bwlimit"))
        if "migration" in bwlimit:
            dc.bwlimit_migration_kib = int(bwlimit["migration"])
        if config.get("max_workers"):
            dc.max_workers = int(config["max_workers"])  # type: ignore[call-overload]
        return dc


def _property_string(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    pairs = (item.split("=", 1) for item in str(value).split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}
