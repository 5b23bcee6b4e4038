"""Why an HA guest's migrate request failed or started nothing (pure, no I/O).

An HA guest's migrate POST only queues the move with the HA manager (pve-ha-manager); its
`hamigrate` task and what the API shows afterwards are judged here, the migration the HA
manager then runs by pve/classifier.py like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.pve.classifier import classify, is_success
from proxmigrate.pve.failure_rule import PERSISTENT_LOCKS, Rule
from proxmigrate.pve.failure_rule import rule as _rule

# An HA guest's migrate POST answers a `hamigrate` task that runs `ha-manager migrate vm:N
# <node>` and prints its output raw (qemu-server API2/Qemu.pm migrate_vm; pve-common
# PVE/Tools.pm run_command). That command fails, and the task with `command 'ha-manager migrate
# ...' failed: exit code N`, when (pve-ha-manager):
_HA_TASK_RULES: tuple[Rule, ...] = (
    # PVE 9 resource-affinity rules put a guest of the request's negative affinity on the
    # target (CLI/ha_manager.pm $print_resource_motion_output; HA/Config.pm
    # get_resource_motion_info), one line per blocking resource after `cannot migrate ...`.
    _rule(
        r"resource '[^']+' on target node '[^']+' in negative affinity",
        Reason.HA_REFUSED,
        False,
        FailurePhase.API,
        False,
    ),
    _rule(r"cannot (?:migrate|relocate) resource '[^']+' to node", Reason.HA_REFUSED, False),
    # API2/HA/Resources.pm check_service_state: someone must disable and fix the service.
    _rule(r"in error state, must be disabled and fixed first", Reason.HA_REFUSED, False),
    # HA/Config.pm service_is_ha_managed: the guest left HA (or became `ignored`) after the
    # POST; asking again migrates it directly.
    _rule(r"resource '[^']+' is not HA managed", Reason.HA_REFUSED, True),
)


def classify_hamigrate(
    exitstatus: str, log_lines: Sequence[str], target: str | None
) -> Failure | None:
    """A stopped `hamigrate` task: an HA refusal, no migration ran; else as `classify`."""
    if is_success(exitstatus):
        return None
    for rule in _HA_TASK_RULES:
        for line in log_lines:
            if rule.pattern.search(line):
                return rule.verdict(line, FailurePhase.API, False)
    return classify(exitstatus, log_lines, target)


def classify_unstarted_ha(target: str, target_online: bool, lock: str | None) -> Failure:
    """An HA request that was queued (its `hamigrate` ended OK) but never became a migration.

    pve-ha-manager logs why only to syslog: the CRM drops a command for a node that is not
    `online` (HA/Manager.pm update_crm_commands, `crm command error - node not online`; also
    a node in maintenance) or, in PVE 9, blocked by negative affinity (queue_resource_motion);
    the LRM's worker dies when migrate_vm refuses (HA/LRM.pm run_workers; a lock taken after
    the POST, storage) and the CRM sets the guest back to `started`. Judged from what the API
    still shows: the target node's state and the guest's lock. The rest is retried: a CRM
    that is slow (a new HA master) looks the same for a while.
    """
    if not target_online:
        line = f"the HA manager dropped the request: target node {target} is not online"
        return Failure(Reason.TARGET_OFFLINE, True, FailurePhase.API, line, False)
    if lock:
        line = f"the HA manager started no migration: VM is locked ({lock})"
        transient = lock not in PERSISTENT_LOCKS
        return Failure(Reason.VM_LOCKED, transient, FailurePhase.API, line, False, lock)
    line = (
        "the HA manager started no migration (node maintenance, PVE 9 affinity rules, a "
        "failed LRM worker: see journalctl -u pve-ha-crm on the HA master, -u pve-ha-lrm on "
        "the source)"
    )
    return Failure(Reason.HA_REFUSED, True, FailurePhase.API, line, False)
