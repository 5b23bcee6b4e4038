"""The reasons of every Kubernetes Event the operator posts, in one place, so
`kubectl get events --field-selector reason=...` and alerting rules have one list to read."""

from __future__ import annotations

from enum import StrEnum


class EventReason(StrEnum):
    MIGRATION_STARTED = "Started"  # a VMMigration's PVE task was requested
    MIGRATION_RETRYING = "Retrying"  # a transient failure; it is queued again
    MIGRATION_SUCCEEDED = "Succeeded"
    MIGRATION_FAILED = "Failed"
    MIGRATION_CANCELLED = "Cancelled"  # deleted, or withdrawn from a cordoned node
    DRAIN_STARTED = "DrainStarted"  # the first VMMigrations of a drain exist
    DRAIN_BLOCKED = "DrainBlocked"  # a drain cannot proceed (capacity, invalid, duplicate)
    DRAIN_FINISHED = "DrainFinished"  # every guest moved or skipped
    DRAIN_FAILED = "DrainFailed"  # finished, some guests not moved
    GUESTS_RETURNED = "GuestsReturned"  # a drain's return home ended (maintenanceDone)
    RETURN_SKIPPED = "ReturnSkipped"  # a guest does not go home, with the reason
    DRIFT_DETECTED = "DriftDetected"  # a placement created VMMigrations to correct drift
    DRIFT_CORRECTED = "DriftCorrected"  # a placement is in sync again
    CLUSTER_READY = "ClusterReady"
    CLUSTER_NOT_READY = "ClusterNotReady"
    # a ProxmoxCluster deleted while migrations ran that were not deleted with it
    MIGRATIONS_LEFT_RUNNING = "LeftRunning"
    TLS_VERIFICATION_OFF = "TLSVerificationOff"
    STEP_STARTED = "StepStarted"  # a NodeMaintenance created the NodeDrains of a step
    NODE_IN_MAINTENANCE = "NodeInMaintenance"  # drained; waiting for the done-signal
    MAINTENANCE_DONE = "MaintenanceDone"  # the done-signal for a node was given
    NODE_DONE = "NodeDone"  # a node's maintenance is over (guests returned if asked)
    NODE_FAILED = "NodeFailed"  # a node's drain failed or is blocked
    MAINTENANCE_BLOCKED = "MaintenanceBlocked"  # the next step does not fit, or a bad request
    MAINTENANCE_SUCCEEDED = "MaintenanceSucceeded"  # every node done
    MAINTENANCE_FAILED = "MaintenanceFailed"  # stopped on a failed node, or cannot be planned
