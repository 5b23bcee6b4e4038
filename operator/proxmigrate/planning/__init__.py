"""Pure planning: which VM goes where, in what order (drains, placements). No I/O, no clock."""

from proxmigrate.planning.capacity import MemoryReserve, memory_need, transfer_bytes
from proxmigrate.planning.concurrent import plan_drains
from proxmigrate.planning.drain import (
    DrainRequest,
    LocalDisksPolicy,
    StoppedVMsPolicy,
    TemplatesPolicy,
    plan_drain,
)
from proxmigrate.planning.drain_plan import (
    DrainPlan,
    PlannedMove,
    SkippedVM,
    UnplaceableCause,
    UnplaceableVM,
)
from proxmigrate.planning.errors import PlanError
from proxmigrate.planning.eta import estimate_remaining_seconds
from proxmigrate.planning.flap import FlapGuard
from proxmigrate.planning.placement import (
    PlacementAction,
    PlacementDecision,
    PlacementRequest,
    plan_placement,
)
from proxmigrate.planning.projection import with_pending_moves
from proxmigrate.planning.selection import DEFAULT_ANTI_AFFINITY_PREFIX, VMSelector
from proxmigrate.planning.units import format_bytes

__all__ = [
    "DEFAULT_ANTI_AFFINITY_PREFIX",
    "DrainPlan",
    "DrainRequest",
    "FlapGuard",
    "LocalDisksPolicy",
    "MemoryReserve",
    "PlacementAction",
    "PlacementDecision",
    "PlacementRequest",
    "PlanError",
    "PlannedMove",
    "SkippedVM",
    "StoppedVMsPolicy",
    "TemplatesPolicy",
    "UnplaceableCause",
    "UnplaceableVM",
    "VMSelector",
    "estimate_remaining_seconds",
    "format_bytes",
    "memory_need",
    "plan_drain",
    "plan_drains",
    "plan_placement",
    "transfer_bytes",
    "with_pending_moves",
]
