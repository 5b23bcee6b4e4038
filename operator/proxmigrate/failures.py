"""Why a migration attempt failed: the one vocabulary of failure reasons (pure).

The PVE classifier (pve/classifier.py) produces these, the engine reacts to them (an
`ssh_dropped` halves a target's allowance), and status, metrics and Events report them; it
sits below all of them so that none has to import another to name a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    SSH_DROPPED = "ssh_dropped"  # sshd refused/reset a connection during key exchange
    PORT_UNAVAILABLE = "port_unavailable"  # insecure mode found no free port on the target
    VM_LOCKED = "vm_locked"  # the VM config carries a lock (backup, migrate, ...)
    TARGET_OFFLINE = "target_offline"  # target unknown or unreachable
    LOCAL_RESOURCES = "local_resources"  # passthrough devices or local disks pin the VM
    STORAGE_UNAVAILABLE = "storage_unavailable"  # a storage is missing on the target
    TIMEOUT = "timeout"  # a lock or start-up wait timed out
    API_ERROR = "api_error"  # the migration POST itself was refused
    CANCELLED = "cancelled"  # the task was stopped, or its VMMigration deleted
    HA_REFUSED = "ha_refused"  # the HA manager refused or dropped the request: no migration
    VM_NOT_FOUND = "vm_not_found"  # the VMMigration names a VM the cluster does not have
    SOURCE_MISMATCH = "source_mismatch"  # the VM runs elsewhere than the expected source
    UNKNOWN = "unknown"

    @property
    def condition_reason(self) -> str:
        """CamelCase, as Kubernetes condition reasons are spelled (`SshDropped`)."""
        return "".join(word.capitalize() for word in self.value.split("_"))


class FailurePhase(StrEnum):
    """Where it failed, in PVE's order (AbstractMigrate::migrate), plus the API call itself."""

    API = "api"
    PREPARE = "prepare"
    PHASE1 = "phase1"  # local volumes scanned and copied
    PHASE2 = "phase2"  # target VM started, tunnel opened, RAM transferred
    PHASE3 = "phase3"  # RAM transfer done, config moved, cleanup over SSH (`rm -f`)
    END = "end"  # final `qm unlock` on the target
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Failure:
    """A classified failure.

    `vm_moved`: False when the VM certainly stayed on its source, True when it already runs
    on the target (the task still ends `migration problems`), None when the log cannot tell.
    `lock` is the config lock involved (`migrate` after a failed final `qm unlock`).
    """

    reason: Reason
    transient: bool
    phase: FailurePhase
    decisive_line: str
    vm_moved: bool | None
    lock: str | None = None

    @property
    def summary(self) -> str:
        return f"{self.reason} in {self.phase}: {self.decisive_line}"
