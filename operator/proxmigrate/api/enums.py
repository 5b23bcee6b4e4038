"""The closed value sets of the API (phases, policies); each mirrors an `enum` in crds/."""

from __future__ import annotations

from enum import StrEnum

# The drain policies are the planner's own vocabulary (it sits below the API), named here too.
from proxmigrate.planning.drain import LocalDisksPolicy as LocalDisksPolicy
from proxmigrate.planning.drain import StoppedVMsPolicy as StoppedVMsPolicy
from proxmigrate.planning.drain import TemplatesPolicy as TemplatesPolicy


class MigrationPhase(StrEnum):
    """`VMMigration.status.phase`."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_MIGRATION_PHASES


FINAL_MIGRATION_PHASES = frozenset(
    {MigrationPhase.SUCCEEDED, MigrationPhase.FAILED, MigrationPhase.CANCELLED}
)


class AttemptOutcome(StrEnum):
    """`VMMigration.status.attempts[].outcome`."""

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    # the task ended `migration problems` after the guest already ran on the target
    SUCCEEDED_WITH_PROBLEMS = "SucceededWithProblems"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class DrainPhase(StrEnum):
    """`NodeDrain.status.phase`."""

    PENDING = "Pending"
    PLANNING = "Planning"
    DRAINING = "Draining"
    DRAINED = "Drained"
    BLOCKED = "Blocked"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    RETURNING = "Returning"  # maintenanceDone with returnGuests: the guests go home
    RETURNED = "Returned"  # every return ended (moved, skipped with a reason, or failed)


class DrainVMPhase(StrEnum):
    """`NodeDrain.status.vms[].phase`."""

    PENDING = "Pending"
    QUEUED = "Queued"
    MIGRATING = "Migrating"
    MIGRATED = "Migrated"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


class DrainReturnPhase(StrEnum):
    """`NodeDrain.status.vms[].returnPhase`: a moved guest's way home."""

    PENDING = "Pending"
    QUEUED = "Queued"
    MIGRATING = "Migrating"
    RETURNED = "Returned"
    SKIPPED = "ReturnSkipped"
    FAILED = "Failed"


class MigrationType(StrEnum):
    """`ProxmoxCluster.spec.migrationPolicy.type`."""

    SECURE = "secure"
    INSECURE = "insecure"


class ClusterMigrationType(StrEnum):
    """`ProxmoxCluster.status.clusterMigrationType`: what datacenter.cfg selects."""

    SECURE = "secure"
    INSECURE = "insecure"
    UNKNOWN = "unknown"


class AuthMethod(StrEnum):
    """`ProxmoxCluster.status.authMethod`."""

    TOKEN = "token"
    TICKET = "ticket"


class PlacementPolicy(StrEnum):
    """`VMPlacement.spec.policy`."""

    ENFORCE = "enforce"
    REPORT = "report"


class MaintenancePhase(StrEnum):
    """`NodeMaintenance.status.phase`."""

    PENDING = "Pending"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    BLOCKED = "Blocked"
    CANCELLED = "Cancelled"


class MaintenanceNodePhase(StrEnum):
    """`NodeMaintenance.status.nodes[].phase`."""

    PENDING = "Pending"
    DRAINING = "Draining"
    IN_MAINTENANCE = "InMaintenance"
    RETURNING = "Returning"
    DONE = "Done"
    FAILED = "Failed"
    BLOCKED = "Blocked"
    SKIPPED = "Skipped"

    @property
    def is_final(self) -> bool:
        return self in (self.DONE, self.FAILED, self.SKIPPED)

    @property
    def is_active(self) -> bool:
        """The node has a drain that still runs, waits or returns."""
        return self in (self.DRAINING, self.IN_MAINTENANCE, self.RETURNING)


class FailurePolicy(StrEnum):
    """`NodeMaintenance.spec.onFailure`."""

    STOP = "stop"
    CONTINUE = "continue"


class DoneSignal(StrEnum):
    """`NodeMaintenance.spec.done.signal`."""

    ANNOTATION = "annotation"
