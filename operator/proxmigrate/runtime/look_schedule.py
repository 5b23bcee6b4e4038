"""When a running migration's task is looked at, and how (no I/O).

A task list per node covers every task of ours there, a log read one task: each round
(runtime/tracking.py `track`) reads a node's list only while a task there may end any
moment (every poll while a queued job may wait for that end), is to be found, an HA
hand-off is awaited or the safety net is due, and a task's log when a planned read is due
(runtime/predictions.py plans them) or when it alone wants its node's list. So requests
scale with migrations, not with the time they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxmigrate.pve.upid import parse_upid
from proxmigrate.runtime import predictions
from proxmigrate.runtime.attempt import Attempt, AttemptState

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime

# Once the `hamigrate` ended, its `qmigrate` appears only when a CRM round has taken the
# command and an LRM round of the source has forked a worker for it (pve-ha-manager
# `src/PVE/HA/CRM.pm` and `src/PVE/HA/LRM.pm` work: `$max_time = 10`, then `sleep_until`;
# LRM.pm run_workers starts at most `max_workers`, 4 by default: HA/Env/PVE2.pm
# get_max_workers): 0-20 s, longer behind other HA moves of the node. Its node's task list
# is read once a round for it (in the node's time: pvesim's time scale), not every poll
# (issue 13: 0.2-0.5 lists per migrated VM).
HANDOFF_LIST_SECONDS = 10.0
# Every task of ours is seen alive at least this often, whatever its predictions: in a task
# list, or by a line its worker wrote (runtime/log_look.py `_alive`). A worker killed outright
# (OOM, SIGKILL, a node reset) writes no end line to its log, so only the task list shows it
# ended (pve-common `src/PVE/UPID.pm` read_status: `unexpected status`): any failure is
# noticed within this time of the worker's last sign of life, one that writes its end line
# often sooner (the next log read). Two minutes, not one: a long drain's transfers (minutes
# on 1 Gbit/s links) paid about one list per VM per minute for it (bench/RESULTS.md, issue 13).
SAFETY_NET_SECONDS = 120.0
# A task whose end no queued job waits for is looked for this long after its last sign of
# life, not every poll. After `migration status: completed` (qemu-server
# `src/PVE/QemuMigrate.pm` phase2 leaves its loop on it, PVE 8 and 9) phase3_cleanup
# resumes the guest on the target and clears its lock there (`qm unlock` over SSH): 3-5 s
# (bench/RESULTS.md, issue 13, twelfth pass), so one look at 6 s mostly finds it ended.
UNAWAITED_END_SECONDS = 6.0


def watched(attempt: Attempt) -> bool:
    """Its task is followed: known by its UPID, or looked for after a lost answer."""
    return attempt.state in (AttemptState.TRACKING, AttemptState.AWAITING_TASK)


def in_task_lists(attempt: Attempt) -> bool:
    """Followed in task lists, not its log: a request whose task is still to be found, or an
    HA request (`hamigrate`) whose hand-off to the HA manager's `qmigrate` is awaited."""
    if attempt.state is AttemptState.AWAITING_TASK:
        return True
    return attempt.upid is not None and parse_upid(attempt.upid).type == "hamigrate"


def needs_list(rt: ClusterRuntime, attempt: Attempt, now: float) -> bool:
    """Every poll while a request's task is to be found or an HA request's `hamigrate` runs,
    once a round while its hand-off is awaited, while it may end now, and as a safety net."""
    if in_task_lists(attempt):
        if attempt.ha_queued_at is None:
            return True
        node = attempt.task_node  # its rounds run on its clock
        return now - attempt.alive_at >= HANDOFF_LIST_SECONDS / rt.node_clocks.rate(node)
    if predictions.ending(rt, attempt, now) and _end_due(rt, attempt, now):
        return True
    return now - attempt.alive_at >= SAFETY_NET_SECONDS


def _end_due(rt: ClusterRuntime, attempt: Attempt, now: float) -> bool:
    """A task that may end now is looked for every poll while a queued job may wait for
    what its end frees (`MigrationEngine.awaits_end`) or an HA hand-off is awaited on its
    node (its list finds the `qmigrate` sooner than once a round, so its first look and
    its end come sooner); else once its last sign of life is UNAWAITED_END_SECONDS old,
    or by a list read for its node's other tasks. Seen later, such an end delays no start;
    its VMMigration's `Succeeded` and the drain's progress come up to that much later."""
    if now - attempt.alive_at >= UNAWAITED_END_SECONDS:
        return True
    if rt.engine.awaits_end(attempt.key, now):
        return True
    node = attempt.task_node
    tasks = rt.attempts.in_state(AttemptState.TRACKING)
    return any(
        in_task_lists(a) for a in tasks if a is not attempt and a.upid and a.task_node == node
    )


def end_unknown(attempt: Attempt) -> bool:
    """Its transfer may end any moment and no prediction says when: re-sending dirtied
    pages, or past the guest's memory in use (runtime/predictions.py `update`): its log is
    read again (`probe_at`) at or before the end it was predicted (`ending_at`)."""
    ending_at, probe_at = attempt.ending_at, attempt.probe_at
    return ending_at is not None and probe_at is not None and ending_at <= probe_at


def ending_alone(
    listing: Sequence[Attempt],
    followed: Sequence[Attempt],
    listed: set[str],
    ending: set[str],
    now: float,
) -> set[str]:
    """Keys of the attempts of `listing` whose node's list would be read only because they
    may end now: its list is not read anyway (`listed`: a lost answer's task is looked for
    there), no other task of ours there is due for a look, may end now (`ending`: keys,
    looked for this poll or not: one list sees both ends) or may end unpredicted (the
    lists read for those watch it too). A log read costs the same request and tells more:
    the end line, the certain transfer end (`migration status: completed`: the engine frees
    its links), or that it still sends and when it will end."""
    by_node: dict[str, list[Attempt]] = {}
    for attempt in followed:
        by_node.setdefault(attempt.task_node, []).append(attempt)
    wanted = {a.key for a in listing} | ending
    lone = set()
    for attempt in listing:
        if in_task_lists(attempt) or now - attempt.alive_at >= SAFETY_NET_SECONDS:
            continue
        node = attempt.task_node
        others = [a for a in by_node[node] if a is not attempt]
        if node not in listed and not any(a.key in wanted or end_unknown(a) for a in others):
            lone.add(attempt.key)
    return lone


def needs_log(rt: ClusterRuntime, attempt: Attempt, now: float) -> bool:
    """A planned log read is due, or the task still runs well after its predicted end (its
    transfer is slower than predicted: its progress tells the new end)."""
    if in_task_lists(attempt):
        return False
    if attempt.probe_at is not None:
        return now >= attempt.probe_at or _rate_awaited(rt, attempt, now)
    if attempt.ending_at is None:
        return False
    overdue = rt.engine.policy.end_window_seconds + predictions.OVERDUE_POLLS * rt.task_poll_seconds
    return now >= attempt.ending_at + overdue


def _rate_awaited(rt: ClusterRuntime, attempt: Attempt, now: float) -> bool:
    """A first look planned later (runtime/predictions.py `first_look_deferral`) is made
    on time after all while the engine holds its source's next start for its rate."""
    if attempt.log_lines_seen or attempt.probe_at is None:
        return False
    deferral = predictions.first_look_deferral(rt, attempt)
    if not deferral or now < attempt.probe_at - deferral:
        return False
    return rt.engine.awaits_rate(attempt.key)
