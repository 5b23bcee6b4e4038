"""Following running migrations: log reads, task lists in batches, HA hand-offs, timeouts.

A task's log is read a second or so after its transfer began; its progress predicts when
the transfer ends (so the engine can reserve the end-phase SSH logins), its last line
(`TASK OK` or `TASK ERROR: ...`) tells an end as well as a task list. One task list per
node covers every task of ours there: it is read while tasks there may end any moment,
while a request's task is to be found or an HA hand-off awaited, and as a safety net every
two minutes. A node's list wanted for one ending task alone is a read of that task's log
instead: the same one request, and it also shows the transfer's certain end (`migration
status: completed`) or, still sending, when it will end. So requests scale with migrations,
not with the time they run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.pve.classifier import (
    classify,
    classify_hamigrate,
    classify_unstarted_ha,
    is_success,
)
from proxmigrate.pve.tracker import (
    TrackedTask,
    evaluate,
    first_clock,
    first_migration_since,
    last_clock,
    log_exitstatus,
    nodes_to_poll,
    poll_since,
    transfer_progress,
)
from proxmigrate.pve.upid import parse_upid
from proxmigrate.runtime import predictions, start_phase
from proxmigrate.runtime.attempt import Attempt, AttemptState
from proxmigrate.runtime.node_clock import NodeClock
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
# Once the `hamigrate` ended, its `qmigrate` appears only when a CRM round has taken the
# command and an LRM round of the source has forked a worker for it (pve-ha-manager
# `src/PVE/HA/CRM.pm` and `src/PVE/HA/LRM.pm` work: `$max_time = 10`, then `sleep_until`;
# LRM.pm run_workers starts at most `max_workers`, 4 by default: HA/Env/PVE2.pm
# get_max_workers): 0-20 s, longer behind other HA moves of the node. Its node's task list
# is read once a round for it (in the node's time: pvesim's time scale), not every poll
# (issue 13: 0.2-0.5 lists per migrated VM).
HANDOFF_LIST_SECONDS = 10.0
# Every task of ours is seen in a task list at least this often, whatever its predictions: a
# worker killed outright (OOM, SIGKILL, a node reset) writes no end line to its log, so only
# the task list shows it ended (pve-common `src/PVE/UPID.pm` read_status: `unexpected
# status`): any failure is noticed within this time, one that writes its end line often
# sooner (the next log read). Two minutes, not one: a long drain's transfers (minutes on
# 1 Gbit/s links) paid about one list per VM per minute for it (bench/RESULTS.md, issue 13).
SAFETY_NET_SECONDS = 120.0
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
    attempt.listed_at = now
    await rt.journal.write(attempt, vmstatus.started(attempt.status, upid, now))


def _watched(attempt: Attempt) -> bool:
    return attempt.state in (AttemptState.TRACKING, AttemptState.AWAITING_TASK)


def _in_task_lists(attempt: Attempt) -> bool:
    """Followed in task lists, not its log: a request whose task is still to be found, or an
    HA request (`hamigrate`) whose hand-off to the HA manager's `qmigrate` is awaited."""
    if attempt.state is AttemptState.AWAITING_TASK:
        return True
    return attempt.upid is not None and parse_upid(attempt.upid).type == "hamigrate"


def _needs_list(rt: ClusterRuntime, attempt: Attempt, now: float) -> bool:
    """Every poll while a request's task is to be found or an HA request's `hamigrate` runs,
    once a round while its hand-off is awaited, while it may end now, and as a safety net."""
    if _in_task_lists(attempt):
        if attempt.ha_queued_at is None:
            return True
        node = parse_upid(str(attempt.upid)).node  # its rounds run on its clock
        return now - attempt.listed_at >= HANDOFF_LIST_SECONDS / rt.node_clocks.rate(node)
    if predictions.ending(rt, attempt, now):
        return True
    return now - attempt.listed_at >= SAFETY_NET_SECONDS


def _end_unknown(attempt: Attempt) -> bool:
    """Its transfer may end any moment and no prediction says when: re-sending dirtied
    pages, or past the guest's memory in use (runtime/predictions.py `update`)."""
    ending_at, probe_at = attempt.ending_at, attempt.probe_at
    return ending_at is not None and probe_at is not None and ending_at <= probe_at


def _alone(
    listing: Sequence[Attempt], followed: Sequence[Attempt], listed: set[str], now: float
) -> set[str]:
    """Keys of the attempts of `listing` whose node's list would be read only because they
    may end now: its list is not read anyway (`listed`: a lost answer's task is looked for
    there), no other task of ours there is due for a look or may end unpredicted (the
    lists read for those watch it too). A log read costs the same request and tells more:
    the end line, the certain transfer end (`migration status: completed`: the engine frees
    its links), or that it still sends and when it will end."""
    by_node: dict[str, list[Attempt]] = {}
    for attempt in followed:
        by_node.setdefault(parse_upid(str(attempt.upid)).node, []).append(attempt)
    wanted = {a.key for a in listing}
    alone = set()
    for attempt in listing:
        if _in_task_lists(attempt) or now - attempt.listed_at >= SAFETY_NET_SECONDS:
            continue
        node = parse_upid(str(attempt.upid)).node
        others = [a for a in by_node[node] if a is not attempt]
        if node not in listed and not any(a.key in wanted or _end_unknown(a) for a in others):
            alone.add(attempt.key)
    return alone


def _needs_log(rt: ClusterRuntime, attempt: Attempt, now: float) -> bool:
    """A planned log read is due, or the task still runs well after its predicted end (its
    transfer is slower than predicted: its progress tells the new end)."""
    if _in_task_lists(attempt):
        return False
    if attempt.probe_at is not None:
        return now >= attempt.probe_at
    if attempt.ending_at is None:
        return False
    overdue = rt.engine.policy.end_window_seconds + predictions.OVERDUE_POLLS * rt.task_poll_seconds
    return now >= attempt.ending_at + overdue


def due(rt: ClusterRuntime, now: float) -> bool:
    """Whether a task of ours is to be looked at now: near its predicted end, at a planned
    log read, or for the safety net. Requests scale with migrations, not with time."""
    if now - rt.last_track < rt.task_poll_seconds:
        return False
    watched = [a for a in rt.attempts.running if _watched(a)]
    return any(_needs_list(rt, a, now) or _needs_log(rt, a, now) for a in watched)


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
    """Look at the tasks that are due: one task list per node where a task may end now, is
    to be found, an HA hand-off is awaited or the safety net is due; then one log read for
    each task still running whose log is due (its end line or its progress), or whose
    node's list it alone wanted (`_alone`)."""
    now = rt.clock()
    unconfirmed = rt.attempts.in_state(AttemptState.AWAITING_TASK)
    followed = [a for a in rt.attempts.in_state(AttemptState.TRACKING) if a.upid]
    tasks = {a.key: TrackedTask(a.request.vmid, str(a.upid), a.source) for a in followed}
    listing = [a for a in followed if _needs_list(rt, a, now)]
    nodes = {a.source for a in unconfirmed}
    alone = _alone(listing, followed, nodes, now)
    looks = [a for a in followed if a.key in alone or _needs_log(rt, a, now)]
    for attempt in listing:
        if attempt.key not in alone:
            nodes |= nodes_to_poll([tasks[attempt.key]])
    if nodes:
        await _read_task_lists(rt, nodes, unconfirmed, followed, tasks, now)
    for attempt in looks:
        if attempt.state is AttemptState.TRACKING and attempt.upid == tasks[attempt.key].upid:
            seen = attempt.log_lines_seen
            await _look(rt, attempt, now)
            if attempt.key in alone and attempt.log_lines_seen == seen:
                # nothing new: a quiet end phase, or a worker killed without an end line
                # (only a task list shows that end): its node's list is the next look
                attempt.listed_at = 0.0
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
        attempt.listed_at = now
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
            await _judge_end(rt, held, end.task.upid, end.exitstatus)


async def _judge_end(rt: ClusterRuntime, attempt: Attempt, upid: str, exitstatus: str) -> None:
    """An ended task: a success at once, a failure classified from its whole log."""
    if is_success(exitstatus):
        await finish(rt, attempt, None)
        return
    parsed = parse_upid(upid)
    lines = await rt.client.task_log(parsed.node, upid)
    judge = classify_hamigrate if parsed.type == "hamigrate" else classify
    await finish(rt, attempt, judge(exitstatus, lines, attempt.request.target))


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


async def _look(rt: ClusterRuntime, attempt: Attempt, now: float) -> None:
    """Read the log lines a task wrote since the last look: its end line ends it (a task list
    would say no more), its progress predicts when its transfer ends (runtime/predictions.py)."""
    assert attempt.upid is not None
    node = parse_upid(attempt.upid).node
    lines = await rt.client.task_log(node, attempt.upid, start=attempt.log_lines_seen)
    attempt.log_lines_seen += len(lines)
    _observe_clock(rt.node_clocks.of(node), attempt, lines, rt.clock())
    exitstatus = log_exitstatus(lines)
    if exitstatus is not None:
        await _judge_end(rt, attempt, attempt.upid, exitstatus)
        return
    progress = transfer_progress(lines)
    start_phase.observe(rt, attempt, lines, progress, now)
    predictions.update(rt, attempt, progress, now)


def _observe_clock(
    clock: NodeClock, attempt: Attempt, lines: Sequence[str], read_at: float
) -> None:
    """What a log read tells of its node's clock (runtime/node_clock.py): its first stamp
    came after our request, its last was written by the time the read came back."""
    if attempt.log_began is None:
        attempt.log_began = first_clock(lines)
        if attempt.log_began is not None:
            clock.requested(attempt.started_at, attempt.log_began)
    last = last_clock(lines)
    if last is not None:
        clock.read(read_at, last)


async def _check_timeouts(rt: ClusterRuntime) -> None:
    now = rt.clock()
    limit = rt.policy.task_timeout_seconds
    for attempt in rt.attempts.in_state(AttemptState.TRACKING):
        if attempt.upid and now - attempt.started_at > limit:
            await stop_task(rt, attempt, "stopping timed-out")
            message = f"task ran longer than taskTimeoutSeconds={limit}"
            failure = Failure(Reason.TIMEOUT, False, FailurePhase.PHASE2, message, False)
            await finish(rt, attempt, failure)
