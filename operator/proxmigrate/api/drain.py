"""`NodeDrain.spec` as typed values, defaults applied as in crds/nodedrains.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxmigrate.api.cluster import PlacementSettings
from proxmigrate.api.enums import LocalDisksPolicy, StoppedVMsPolicy, TemplatesPolicy
from proxmigrate.api.fields import SpecError, SpecReader
from proxmigrate.api.refs import cluster_name
from proxmigrate.planning.capacity import MemoryReserve
from proxmigrate.planning.selection import VMSelector


def read_vm_selector(reader: SpecReader) -> VMSelector:
    """spec.vmSelector as the planner's selector (include lists united, then exclusions)."""
    return VMSelector(
        vmids=frozenset(reader.list_of("vmids", int)),
        tags=frozenset(reader.list_of("tags", str)),
        pools=frozenset(reader.list_of("pools", str)),
        exclude_vmids=frozenset(reader.list_of("excludeVmids", int)),
        exclude_tags=frozenset(reader.list_of("excludeTags", str)),
    )


@dataclass(frozen=True)
class NodeDrainSpec:
    cluster_name: str
    node_name: str
    reason: str | None = None
    targets: tuple[str, ...] | None = None  # None: every other online, uncordoned node
    vm_selector: VMSelector = field(default_factory=VMSelector)
    stopped_vms: StoppedVMsPolicy = StoppedVMsPolicy.MIGRATE
    templates: TemplatesPolicy = TemplatesPolicy.MIGRATE
    local_disks: LocalDisksPolicy = LocalDisksPolicy.SKIP
    max_parallel: int | None = None
    memory_reserve_percent: int | None = None  # None: the cluster's placement setting
    memory_reserve_minimum_bytes: int | None = None
    dry_run: bool = False
    allow_partial: bool = False
    return_guests: bool = False  # maintenance_done sends the moved guests home
    maintenance_done: bool = False  # only with return_guests (the CRD refuses it otherwise)
    avoid_targets: frozenset[str] = frozenset()  # targets of last resort (NodeMaintenance)

    @classmethod
    def from_spec(cls, data: Mapping[str, Any] | None, path: str = "spec") -> NodeDrainSpec:
        reader = SpecReader(data, path)
        node_name = reader.get("nodeName", str)
        targets = reader.list_of("targets", str) if reader.has("targets") else None
        if targets is not None and node_name in targets:
            raise SpecError(f"{path}.targets must not contain {path}.nodeName ({node_name})")
        return_guests = reader.get("returnGuests", bool, False)
        maintenance_done = reader.get("maintenanceDone", bool, False)
        if maintenance_done and not return_guests:
            raise SpecError(
                f"{path}.maintenanceDone only ends a drain with {path}.returnGuests: true; "
                "delete the NodeDrain to end it and keep the guests where they are"
            )
        return cls(
            cluster_name=cluster_name(reader),
            node_name=node_name,
            reason=reader.get("reason", str, None),
            targets=targets,
            vm_selector=read_vm_selector(reader.child("vmSelector")),
            stopped_vms=reader.get("stoppedVMs", StoppedVMsPolicy, StoppedVMsPolicy.MIGRATE),
            templates=reader.get("templates", TemplatesPolicy, TemplatesPolicy.MIGRATE),
            local_disks=reader.get("localDisks", LocalDisksPolicy, LocalDisksPolicy.SKIP),
            max_parallel=reader.get("maxParallel", int, None),
            memory_reserve_percent=reader.get("memoryReservePercent", int, None),
            memory_reserve_minimum_bytes=reader.quantity("memoryReserveMinimum"),
            dry_run=reader.get("dryRun", bool, False),
            allow_partial=reader.get("allowPartial", bool, False),
            return_guests=return_guests,
            maintenance_done=maintenance_done,
            avoid_targets=frozenset(reader.list_of("avoidTargets", str)),
        )

    def effective_max_parallel(self, cluster_max_parallel: int) -> int:
        """The drain's own cap, never above the cluster policy's."""
        if self.max_parallel is None:
            return cluster_max_parallel
        return min(self.max_parallel, cluster_max_parallel)

    def memory_reserve(self, cluster: PlacementSettings) -> MemoryReserve:
        """The cluster's reserve with this drain's overrides."""
        return cluster.memory_reserve(
            self.memory_reserve_percent, self.memory_reserve_minimum_bytes
        )
