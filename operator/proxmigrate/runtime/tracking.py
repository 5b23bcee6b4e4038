"""Following running migrations: task lists in batches, HA hand-offs, log probes, timeouts.

One task list per source node per poll covers every migration of ours there; a task's log
is read once or twice to predict when its transfer ends, so the engine can reserve the
end-phase SSH logins, and task lists are read every poll only near a predicted end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.pve.classifier import classify, classify_hamigrate, classify_unstarted_ha
from proxmigrate.pve.tracker import (
    TrackedTask,
    evaluate,
    first_migration_since,
    nodes_to_poll,
    poll_since,
    transfer_progress,
)
from proxmigrate.pve.upid import parse_upid
from proxmigrate.runtime.attempt import Attempt, AttemptState
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
REPROBE_AFTER_SHARE = 0.7  # re-read a long transfer's rate when this share of its ETA passed
REPROBE_MIN_SECONDS = 30.0  # transfers predicted to end sooner are probed after that end
# A transfer re-sending dirtied pages is read again after this share of the time it has run.
RESEND_RECHECK_SHARE = 0.5
# Task lists are read every poll while a task may end soon, and at least every IDLE_POLLS
# polls otherwise (an unexpected failure mid-transfer is noticed that late at worst).
IDLE_POLLS = 5
# PVE stamps tasks with its own clock; NTP keeps it near ours, this margin covers the rest.
CLOCK_SKEW_SECONDS = 30


def recorded_upids(current: Mapping[str, Any]) -> set[str]:
    """UPIDs earlier attempts of a VMMigration recorded in its status."""
    return {str(a["upid"]) for a in current.get("attempts") or [] if a.get("upid")}


def _first_probe_delay(rt: ClusterRuntime) -> float:
    """Read a task's log once its tunnel is up and the transfer rate has settled."""
    return 2 * rt.engine.policy.start_window_seconds


async def record_upid(rt: ClusterRuntime, attempt: Attempt, upid: str) -> None:
    """Its task is known: recorded at once, so a restart resumes by UPID."""
    attempt.track(upid, probe_at=rt.clock() + _first_probe_delay(rt))
    await rt.journal.write(attempt, vmstatus.started(attempt.status, upid, rt.clock()))


def _watched(attempt: Attempt) -> bool:
    return attempt.state in (AttemptState.TRACKING, AttemptState.AWAITING_TASK)


def due(rt: ClusterRuntime, now: float) -> bool:
    """Read task lists every poll while a task may end or fail soon, else every `IDLE_POLLS`
    polls: long transfers whose end is predicted need no watching meanwhile."""
    watched = [a for a in rt.attempts.running if _watched(a)]
    since = now - rt.last_track
    poll = rt.task_poll_seconds
    if not watched or since < poll:
        return False
    return since >= IDLE_POLLS * poll or any(_needs_watching(a, now, poll) for a in watched)


def _needs_watching(attempt: Attempt, now: float, poll: float) -> bool:
    if attempt.state is AttemptState.AWAITING_TASK:  # its task is still to be identified
        return True
    if attempt.probe_at is not None and now >= attempt.probe_at:
        return True
    # before its first log read a migration may fail any moment (most drops happen at its
    # start); after it, only near the predicted end
    return attempt.ending_at is None or attempt.ending_at - now <= poll


def announce_endings(rt: ClusterRuntime, now: float) -> None:
    """Tell the engine which transfers are about to end: their `rm -f` and `qm unlock`
    logins to the target are seconds away and count against its handshake budget.

    Only a predicted end is announced; a transfer that will be looked at again first
    (`probe_at` at or before `ending_at`: its end is unknown) holds no slot meanwhile."""
    lead = rt.engine.policy.end_spread_seconds
    for attempt in rt.attempts.running:
        ending_at, probe_at = attempt.ending_at, attempt.probe_at
        if ending_at is None or now < ending_at - lead:
            continue
        if probe_at is None or probe_at > ending_at:
            rt.engine.notify_ending(attempt.key, now)


async def track(rt: ClusterRuntime) -> None:
    """One task list per node that runs (or should soon run) a migration of ours."""
    unconfirmed = rt.attempts.in_state(AttemptState.AWAITING_TASK)
    tracked = {
        a.key: TrackedTask(a.request.vmid, a.upid, a.source)
        for a in rt.attempts.in_state(AttemptState.TRACKING)
        if a.upid
    }
    starts = [int(a.started_at) - CLOCK_SKEW_SECONDS for a in unconfirmed]
    first = poll_since(tracked.values())
    since = min([*starts, *([first] if first is not None else [])])
    nodes = nodes_to_poll(tracked.values()) | {a.source for a in unconfirmed}
    lists: dict[str, list[dict[str, Any]]] = {}
    for node in sorted(nodes):
        lists[node] = await rt.client.tasks(node, since=since)
    await _identify_unconfirmed(rt, unconfirmed, lists)
    result = evaluate(list(tracked.values()), lists)
    by_upid = {task.upid: key for key, task in tracked.items()}
    queued: list[Attempt] = []
    for handoff in result.handoffs:
        attempt = rt.attempts.get(by_upid[handoff.request.upid])
        if attempt is None or not attempt.running:
            continue
        if handoff.child is not None:
            await record_upid(rt, attempt, handoff.child.upid)
        else:
            queued.append(attempt)
    await _judge_ha_requests(rt, queued)
    for end in result.finished:
        attempt = rt.attempts.get(by_upid[end.task.upid])
        if attempt is None or not attempt.running:
            continue
        if end.succeeded:
            await finish(rt, attempt, None)
            continue
        lines = await rt.client.task_log(end.task.parsed.node, end.task.upid)
        judge = classify_hamigrate if end.task.parsed.type == "hamigrate" else classify
        await finish(rt, attempt, judge(end.exitstatus, lines, attempt.request.target))
    await _probe_transfers(rt, rt.clock())
    await _check_timeouts(rt)


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
        if now - attempt.ha_queued_at > HA_DECISION_SECONDS:
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


async def _probe_transfers(rt: ClusterRuntime, now: float) -> None:
    """Predict transfer ends from PVE's progress lines, with a few log reads per task.

    No prediction outlives its time: a transfer predicted to end soon is read again if its
    task still runs one poll after the end phase that follows, and one whose first pass is
    over (re-sent pages past the guest's memory: the log does not tell how much is left)
    after a share of the time it has run, never sooner than the idle poll reads task lists
    anyway."""
    poll = rt.task_poll_seconds
    for attempt in rt.attempts.in_state(AttemptState.TRACKING):
        if not attempt.upid or attempt.probe_at is None or now < attempt.probe_at:
            continue
        node = parse_upid(attempt.upid).node
        lines = await rt.client.task_log(node, attempt.upid, start=attempt.log_lines_seen)
        attempt.log_lines_seen += len(lines)
        progress = transfer_progress(lines)
        if progress is not None and progress.rate > 0:
            dirty = progress.dirty_bounds(now - attempt.started_at)
            rt.engine.observe_rate(attempt.key, progress.rate, dirty)
        if progress is None or not (progress.rate > 0 or progress.completed):
            attempt.probe_at = now + _first_probe_delay(rt)
            if attempt.ending_at is not None:  # an earlier prediction, not confirmed
                attempt.ending_at = attempt.probe_at
            continue
        left = progress.seconds_left
        if left is None:  # re-sending dirtied pages: look again later, announce nothing
            look = max(IDLE_POLLS * poll, RESEND_RECHECK_SHARE * (now - attempt.started_at))
            attempt.ending_at = attempt.probe_at = now + look
            continue
        attempt.ending_at = now + left
        if progress.completed:
            attempt.probe_at = None  # the end phase runs; the task list shows its end
        elif left > REPROBE_MIN_SECONDS:
            attempt.probe_at = now + left * REPROBE_AFTER_SHARE
        else:  # still running after its end phase would have ended: read again
            attempt.probe_at = attempt.ending_at + rt.engine.policy.end_window_seconds + poll


async def _check_timeouts(rt: ClusterRuntime) -> None:
    now = rt.clock()
    limit = rt.policy.task_timeout_seconds
    for attempt in rt.attempts.in_state(AttemptState.TRACKING):
        if attempt.upid and now - attempt.started_at > limit:
            await stop_task(rt, attempt, "stopping timed-out")
            message = f"task ran longer than taskTimeoutSeconds={limit}"
            failure = Failure(Reason.TIMEOUT, False, FailurePhase.PHASE2, message, False)
            await finish(rt, attempt, failure)
