"""Values the engine takes and returns: jobs, outcomes, decisions and snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from proxmigrate.failures import Reason


@dataclass(frozen=True)
class Job:
    """One migration to schedule; `key` identifies it (e.g. the VMMigration's namespace/name)."""

    key: str
    vmid: int
    source: str
    target: str
    priority: int = 0  # higher starts first
    memory_bytes: int = 0  # guest memory in use: what its stream copies at least (0: unknown)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the controller classified it.

    An end-phase `ssh_dropped` (the VM already runs on the target) may be reported as
    `succeeded=True, reason=Reason.SSH_DROPPED`: the job is done, and the drop still slows
    the target.
    """

    succeeded: bool
    reason: Reason | None = None
    transient: bool = False


@dataclass(frozen=True)
class Decision:
    """What the controller must do after an attempt ended."""

    kind: Literal["done", "retry", "failed"]
    attempt: int  # the attempt that just ended, counting from 1
    retry_at: float | None = None  # set for "retry": the job is queued again, not before this
    reason: Reason | None = None


@dataclass(frozen=True)
class EngineSnapshot:
    """The engine's state for metrics and status, at one instant."""

    queued: int  # waiting to start, those waiting for a retry included
    waiting_retry: int  # queued jobs whose backoff has not elapsed yet
    running: int
    running_per_target: Mapping[str, int]
    running_per_source: Mapping[str, int]
    limit_per_target: Mapping[str, int]  # AIMD concurrency allowance of every known target
    handshake_budget_per_target: Mapping[str, int]  # AIMD pending-handshake budget
    pending_handshakes_per_target: Mapping[str, int]  # the engine's estimate at that instant
