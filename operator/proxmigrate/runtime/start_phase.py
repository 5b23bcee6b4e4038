"""How long a migration's start phase lasted, told to the engine from its task log (no I/O).

The start phase is PVE's SSH logins before the RAM transfer (`/bin/true`, `qm start`, the
`qm mtunnel`), which end with `ssh tunnel ver 1` (docs/reference/proxmox.md, "SSH
connections of one migration"). On a busy host they take several times the engine's
configured window; the engine learns each target's window from what the logs show
(engine rule 2), so it never counts a login as done while sshd still holds it pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxmigrate.pve.task_log import TransferProgress, tunnel_up_clock
from proxmigrate.runtime.attempt import Attempt
from proxmigrate.runtime.node_clock import STAMP_RESOLUTION

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime


def observe(
    rt: ClusterRuntime,
    attempt: Attempt,
    lines: Sequence[str],
    progress: TransferProgress | None,
    now: float,
) -> None:
    """After a log read of a running task: its tunnel up frees its start slot and tells the
    phase's length, the log's own stamps from its first line in our seconds (its node's
    clock rate, runtime/node_clock.py), but no longer than the time since the request (a
    rate not learnt yet cannot inflate it); a transfer under way means the tunnel is up
    too; neither yet in a live migration's log tells the phase lasts at least that long.
    An HA guest's task starts after the HA manager's queue: only its stamps count."""
    if attempt.tunnel_seen:
        return
    up = tunnel_up_clock(lines)
    vm = attempt.vm
    if up is not None or progress is not None:
        attempt.tunnel_seen = True
        phase = None
        if up is not None and attempt.log_began is not None and attempt.upid is not None:
            stamps = up - attempt.log_began + STAMP_RESOLUTION
            phase = stamps / rt.node_clocks.rate(attempt.task_node)
            if vm is None or not vm.ha_managed:
                phase = min(phase, now - attempt.started_at)
        rt.engine.notify_tunnel_up(attempt.key, now, start_phase=phase)
    elif vm is not None and vm.running and not vm.ha_managed:
        rt.engine.notify_tunnel_pending(attempt.key, now)
