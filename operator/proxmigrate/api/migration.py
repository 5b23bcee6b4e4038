"""`VMMigration.spec` as typed values, defaults applied as in crds/vmmigrations.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxmigrate.api.enums import MigrationPhase
from proxmigrate.api.fields import SpecError, SpecReader
from proxmigrate.api.refs import cluster_name


@dataclass(frozen=True)
class VMMigrationSpec:
    cluster_name: str
    vmid: int
    target: str
    source: str | None = None  # when set, the guest must be there
    online: bool = True
    with_local_disks: bool = False
    bandwidth_limit_kib: int | None = None  # overrides the cluster policy's bwlimit
    priority: int = 0

    @classmethod
    def from_spec(cls, data: Mapping[str, Any] | None, path: str = "spec") -> VMMigrationSpec:
        reader = SpecReader(data, path)
        spec = cls(
            cluster_name=cluster_name(reader),
            vmid=reader.get("vmid", int),
            target=reader.get("target", str),
            source=reader.get("source", str, None),
            online=reader.get("online", bool, True),
            with_local_disks=reader.get("withLocalDisks", bool, False),
            bandwidth_limit_kib=reader.get("bandwidthLimit", int, None),
            priority=reader.get("priority", int, 0),
        )
        if spec.source == spec.target:
            raise SpecError(f"{path}.source and {path}.target must differ")
        return spec


def migration_phase(migration: Mapping[str, Any]) -> MigrationPhase:
    """A VMMigration's phase; one the controller has not seen yet counts as Pending."""
    phase = (migration.get("status") or {}).get("phase")
    return MigrationPhase(phase) if phase else MigrationPhase.PENDING
