"""Process-wide operator settings from the command line (`proxmigrate run --help`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OperatorOptions:
    # How often running migrations' tasks are polled (one task list per source node per poll).
    # ProxLB polls every ~5 s; 2 s keeps detection quick at < 1 request per migrated VM per 2 s.
    task_poll_seconds: float = 2.0
    # How long a silent peer still counts as alive (kopf's default: 60 s); a standby takes over
    # this long after the active replica died without saying goodbye.
    peering_lifetime_seconds: int = 60
    # Peering configured: no replica acts until it sees the peering object (split brain
    # otherwise); False only for a standalone operator.
    peering_mandatory: bool = False
    # Whether a ProxmoxCluster may turn TLS verification off (its token then goes to whoever
    # answers at its endpoints): an operator-wide decision, not a tenant's.
    allow_insecure_tls: bool = False


OPTIONS = OperatorOptions()
