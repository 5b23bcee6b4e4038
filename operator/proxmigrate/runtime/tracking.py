"""Following running migrations: one round of looks, what task lists say, timeouts.

A round (`track`) reads the task lists and logs the schedule asks for
(runtime/look_schedule.py): a task list per node finds the task of a request whose answer
was lost, follows an HA request's hand-off to the HA manager's `qmigrate`, and ends the
tasks it shows ended; a log read (runtime/log_look.py) ends a task by its end line or
predicts when its transfer ends. So requests scale with migrations, not with the time they
run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.pve.ha_verdicts import classify_unstarted_ha
from proxmigrate.pve.tracker import (
    TrackedTask,
    evaluate,
    first_migration_since,
    nodes_to_poll,
    poll_since,
)
from proxmigrate.pve.upid import parse_upid
from proxmigrate.runtime import predictions
from proxmigrate.runtime.attempt import Attempt, AttemptState
from proxmigrate.runtime.log_look import judge_end, look
from proxmigrate.runtime.look_schedule import (
    end_unknown,
    ending_alone,
    needs_list,
    needs_log,
    watched,
)
from proxmigrate.runtime.outcomes import finish
from proxmigrate.runtime.stopping import stop_task
from proxmigrate.status import migration as vmstatus

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime

# How long a request whose answer was lost may take to show up as a task before it counts as
# a transient failure.
UNCONFIRMED_TASK_TIMEOUT = 300.0
# An HA guest's request is a `hamigrate` task that only queues the move (qemu-server
# API2/Qemu.pm migrate_vm). The CRM takes it within one round (pve-ha-manager HA/CRM.pm work,
# `$max_time = 10`) and `hastate` reads `migrate` until the LRM's migration has ended
# (HA/Manager.pm next_state_started, next_state_migrate_relocate). Not `migrate`, not moved
# and no task after three rounds: the HA manager dropped it or its worker died.
HA_DECISION_SECONDS = 30.0
# PVE stamps tasks with its own clock; NTP keeps it near ours, this margin covers the rest.
CLOCK_SKEW_SECONDS = 30


def recorded_upids(current: Mapping[str, Any]) -> set[str]:
    """UPIDs earlier attempts of a VMMigration recorded in its status."""
    return {str(a["upid"]) for a in current.get("attempts") or [] if a.get("upid")}


async def record_upid(rt: ClusterRuntime, attempt: Attempt, upid: str) -> None:
    """Its task is known: recorded at once, so a restart resumes by UPID. Its log is first
    read once the transfer may have begun, or as planned before (a resumed task: at once)."""
    now = rt.clock()
    is_request = parse_upid(upid).type == "hamigrate"  # followed in task lists, not its log
    first = now + predictions.first_look(rt, attempt)
    planned = attempt.probe_at
    attempt.track(upid, probe_at=None if is_request else min(first, planned or first))
    attempt.alive_at = now
    await rt.journal.write(attempt, vmstatus.started(attempt.status, upid, now))


def due(rt: ClusterRuntime, now: float) -> bool:
    """Whether a task of ours is to be looked at now: near its predicted end, at a planned
    log read, or for the safety net. Requests scale with migrations, not with time."""
    if now - rt.last_track < rt.task_poll_seconds:
        return False
    followed = [a for a in rt.attempts.running if watched(a)]
    return any(needs_list(rt, a, now) or needs_log(rt, a, now) for a in followed)


def announce_endings(rt: ClusterRuntime, now: float) -> None:
    """Tell the engine which transfers are about to end: their `rm -f` and `qm unlock`
    logins to the target are seconds away and count against its handshake budget.

    Only a predicted end is announced; a transfer that will be looked at again first
    (`probe_at` at or before `ending_at`: its end is unknown) holds no slot meanwhile."""
    lead = rt.engine.policy.end_spread_seconds
    for attempt in rt.attempts.running:
        ending_at = attempt.ending_at
        if ending_at is not None and now >= ending_at - lead and not end_unknown(attempt):
            rt.engine.notify_ending(attempt.key, now)


async def track(rt: ClusterRuntime) -> None:
    """Look at the tasks that are due: one task list per node where a task may end now, is
    to be found, an HA hand-off is awaited or the safety net is due; then one log read for
    each task still running whose log is due (its end line or its progress), or whose
    node's list it alone wanted (`look_schedule.ending_alone`)."""
    now = rt.clock()
    unconfirmed = rt.attempts.in_state(AttemptState.AWAITING_TASK)
    followed = [a for a in rt.attempts.in_state(AttemptState.TRACKING) if a.upid]
    tasks = {a.key: TrackedTask(a.request.vmid, str(a.upid), a.source) for a in followed}
    listing = [a for a in followed if needs_list(rt, a, now)]
    nodes = {a.source for a in unconfirmed}
    ending = {a.key for a in followed if predictions.ending(rt, a, now)}
    alone = ending_alone(listing, followed, nodes, ending, now)
    looks = [a for a in followed if a.key in alone or needs_log(rt, a, now)]
    for attempt in listing:
        if attempt.key not in alone:
            nodes |= nodes_to_poll([tasks[attempt.key]])
    if nodes:
        await _read_task_lists(rt, nodes, unconfirmed, followed, tasks, now)
    for attempt in looks:
        if attempt.state is AttemptState.TRACKING and attempt.upid == tasks[attempt.key].upid:
            seen = attempt.log_lines_seen
            await look(rt, attempt, now)
            if attempt.key in alone and attempt.log_lines_seen == seen:
                # nothing new: a quiet end phase, or a worker killed without an end line
                # (only a task list shows that end): its node's list is the next look
                attempt.alive_at = 0.0
    await _check_timeouts(rt)


async def _read_task_lists(
    rt: ClusterRuntime,
    nodes: set[str],
    unconfirmed: list[Attempt],
    followed: list[Attempt],
    tasks: Mapping[str, TrackedTask],
    now: float,
) -> None:
    """One task list per node in `nodes`: tasks found, hand-offs followed, ends judged."""
    starts = [int(a.started_at) - CLOCK_SKEW_SECONDS for a in unconfirmed]
    first = poll_since(tasks.values())
    since = min([*starts, *([first] if first is not None else [])])
    lists: dict[str, list[dict[str, Any]]] = {}
    for node in sorted(nodes):
        lists[node] = await rt.client.tasks(node, since=since)
    await _identify_unconfirmed(rt, unconfirmed, lists)
    listed = [a for a in followed if nodes_to_poll([tasks[a.key]]) <= nodes]
    for attempt in listed:
        attempt.alive_at = now
    result = evaluate([tasks[a.key] for a in listed], lists)
    by_upid = {tasks[a.key].upid: a.key for a in listed}
    queued: list[Attempt] = []
    for handoff in result.handoffs:
        held = rt.attempts.get(by_upid[handoff.request.upid])
        if held is None or not held.running:
            continue
        if handoff.child is not None:
            await record_upid(rt, held, handoff.child.upid)
        else:
            queued.append(held)
    await _judge_ha_requests(rt, queued)
    for end in result.finished:
        held = rt.attempts.get(by_upid[end.task.upid])
        if held is not None and held.running:
            await judge_end(rt, held, end.task.upid, end.exitstatus)


async def _identify_unconfirmed(
    rt: ClusterRuntime, unconfirmed: list[Attempt], lists: Mapping[str, list[dict[str, Any]]]
) -> None:
    """Find, in the source's task list, the task of each request whose answer was lost: a
    `qmigrate`, or for an HA guest the `hamigrate` its POST forked. One that never appears
    is retried (or fails) as a timeout."""
    for attempt in unconfirmed:
        since = int(attempt.started_at) - CLOCK_SKEW_SECONDS
        entries = lists.get(attempt.source, [])
        recorded = recorded_upids(attempt.status)
        types = ("qmigrate", "hamigrate")
        upid = first_migration_since(entries, attempt.request.vmid, since, recorded, types)
        if upid:
            await record_upid(rt, attempt, upid)
        elif rt.clock() - attempt.started_at > UNCONFIRMED_TASK_TIMEOUT:
            message = f"no migration task appeared within {UNCONFIRMED_TASK_TIMEOUT:.0f} s"
            failure = Failure(Reason.TIMEOUT, True, FailurePhase.API, message, False)
            await finish(rt, attempt, failure)


async def _judge_ha_requests(rt: ClusterRuntime, queued: list[Attempt]) -> None:
    """HA requests queued without a migration task yet. Past HA_DECISION_SECONDS one
    inventory read for all of them tells whether the HA manager still moves a guest
    (`hastate` `migrate`), has moved it, or dropped the request: PVE shows no task and logs
    why only to syslog, so the classifier judges from `hastate`, node and lock."""
    now = rt.clock()
    due_now = []
    for attempt in queued:
        attempt.ha_queued_at = attempt.ha_queued_at or now
        if now - attempt.ha_queued_at >= HA_DECISION_SECONDS:
            due_now.append(attempt)
    if not due_now:
        return
    inventory = await rt.refresh_inventory(max_age=rt.task_poll_seconds)
    for attempt in due_now:
        request = attempt.request
        vm = inventory.vm(request.vmid)
        if vm is not None and vm.node == request.target:
            await finish(rt, attempt, None)
        elif vm is None or vm.ha_state != "migrate":
            target = inventory.node(request.target)
            online = target is not None and target.online
            lock = vm.lock if vm is not None else None
            await finish(rt, attempt, classify_unstarted_ha(request.target, online, lock))


async def _check_timeouts(rt: ClusterRuntime) -> None:
    """A task running past `taskTimeoutSeconds` is stopped and fails as a timeout."""
    now = rt.clock()
    limit = rt.policy.task_timeout_seconds
    for attempt in rt.attempts.in_state(AttemptState.TRACKING):
        if attempt.upid and now - attempt.started_at > limit:
            await stop_task(rt, attempt, "stopping timed-out")
            message = f"task ran longer than taskTimeoutSeconds={limit}"
            failure = Failure(Reason.TIMEOUT, False, FailurePhase.PHASE2, message, False)
            await finish(rt, attempt, failure)
