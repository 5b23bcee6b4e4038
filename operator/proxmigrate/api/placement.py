"""`VMPlacement.spec` as typed values, defaults applied as in crds/vmplacements.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxmigrate.api.enums import PlacementPolicy
from proxmigrate.api.fields import SpecError, SpecReader
from proxmigrate.api.refs import cluster_name
from proxmigrate.planning.flap import FlapGuard
from proxmigrate.planning.selection import VMSelector


@dataclass(frozen=True)
class FlapGuardSpec:
    max_migrations: int = 3
    window_seconds: int = 3600

    @classmethod
    def read(cls, reader: SpecReader) -> FlapGuardSpec:
        return cls(
            max_migrations=reader.get("maxMigrations", int, 3),
            window_seconds=reader.get("windowSeconds", int, 3600),
        )

    def guard(self) -> FlapGuard:
        return FlapGuard(self.max_migrations, self.window_seconds)


@dataclass(frozen=True)
class VMPlacementSpec:
    """Exactly one of `vmid`, `name`, `selector`; `nodes` in preference order (spec.node
    becomes a one-node list)."""

    cluster_name: str
    nodes: tuple[str, ...]
    vmid: int | None = None
    name: str | None = None
    selector: VMSelector | None = None
    policy: PlacementPolicy = PlacementPolicy.ENFORCE
    flap_guard: FlapGuardSpec = field(default_factory=FlapGuardSpec)

    @classmethod
    def from_spec(cls, data: Mapping[str, Any] | None, path: str = "spec") -> VMPlacementSpec:
        reader = SpecReader(data, path)
        chosen = [key for key in ("vmid", "name", "selector") if reader.has(key)]
        if len(chosen) != 1:
            raise SpecError(f"set exactly one of {path}.vmid, {path}.name or {path}.selector")
        if reader.has("node") == reader.has("nodes"):
            raise SpecError(f"set exactly one of {path}.node or {path}.nodes")
        nodes = (reader.get("node", str),) if reader.has("node") else reader.list_of("nodes", str)
        if not nodes:
            raise SpecError(f"{path}.nodes needs at least one node")
        return cls(
            cluster_name=cluster_name(reader),
            nodes=nodes,
            vmid=reader.get("vmid", int, None),
            name=reader.get("name", str, None),
            selector=_selector(reader.child("selector")) if reader.has("selector") else None,
            policy=reader.get("policy", PlacementPolicy, PlacementPolicy.ENFORCE),
            flap_guard=FlapGuardSpec.read(reader.child("flapGuard")),
        )


def _selector(reader: SpecReader) -> VMSelector:
    tags = reader.list_of("tags", str)
    pool = reader.get("pool", str, None)
    if not tags and pool is None:
        raise SpecError(f"{reader.path} needs tags or pool")
    return VMSelector(tags=frozenset(tags), pools=frozenset({pool} if pool else ()))
