"""VMMigrations into a cluster's runtime and out again: accept, resume, withdraw, cancel.

Accepting checks the request against the inventory and queues it in the engine, or, for
one that was Running when the operator stopped, finds its task first: a request that may
have reached PVE is never sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxmigrate import metrics
from proxmigrate.api.enums import MigrationPhase
from proxmigrate.api.events import EventReason
from proxmigrate.engine import Job, Outcome
from proxmigrate.failures import Reason
from proxmigrate.runtime import outcomes, tracking
from proxmigrate.runtime.attempt import Attempt, AttemptState, MigrationRequest
from proxmigrate.runtime.stopping import stop_task
from proxmigrate.runtime.tracking import CLOCK_SKEW_SECONDS, recorded_upids
from proxmigrate.status import migration as vmstatus

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)


async def accept(rt: ClusterRuntime, request: MigrationRequest, current: Mapping[str, Any]) -> bool:
    """Take a VMMigration that is new, queued, or was running before a restart; False when
    it is known here already."""
    attempt = rt.attempts.admit(request, dict(current), rt.clock())
    if attempt is None:
        return False
    try:
        if current.get("phase") == MigrationPhase.RUNNING:
            await _resume(rt, attempt)
        else:
            await _submit(rt, attempt)
    except BaseException:
        if attempt.state is AttemptState.ACCEPTING:  # nothing decided: taken again later
            rt.attempts.drop(attempt)
        raise
    rt.wake()
    return True


async def _submit(rt: ClusterRuntime, attempt: Attempt) -> None:
    request = attempt.request
    inventory = await rt.refresh_inventory(max_age=5.0)
    vm = inventory.vm(request.vmid)
    now = rt.clock()
    if vm is None:
        message = f"VM {request.vmid} does not exist in cluster {rt.label}"
        await outcomes.refused(rt, attempt, Reason.VM_NOT_FOUND, message)
        return
    if inventory.node(request.target) is None:
        names = ", ".join(sorted(node.name for node in inventory.nodes))
        message = f"node {request.target!r} is not in cluster {rt.label} (nodes: {names})"
        await outcomes.refused(rt, attempt, Reason.TARGET_OFFLINE, message)
        return
    if request.source and vm.node not in (request.source, request.target):
        message = (
            f"VM {request.vmid} runs on {vm.node}, not on the expected source {request.source}"
        )
        await outcomes.refused(rt, attempt, Reason.SOURCE_MISMATCH, message)
        return
    if vm.node == request.target:
        attempt.end()
        note = f"VM {request.vmid} already on {vm.node}"
        await rt.journal.write(attempt, vmstatus.succeeded(attempt.status, now, note=note))
        return
    job = Job(
        key=request.key,
        vmid=request.vmid,
        source=vm.node,
        target=request.target,
        priority=request.priority,
        memory_bytes=vm.used_memory if vm.running else 0,
    )
    rt.engine.submit(job, now)
    attempt.queue(job, now, vm)
    message = f"queued: VM {request.vmid} {vm.node} -> {request.target}"
    await rt.journal.write(attempt, vmstatus.queued(attempt.status, vm.node, now, message))


async def _resume(rt: ClusterRuntime, attempt: Attempt) -> None:
    """A migration that was Running when the operator stopped: find its task, never re-POST
    one that may have reached PVE."""
    request, current = attempt.request, attempt.status
    source = str(current.get("sourceNode") or "")
    recorded = current.get("upid")
    number = int(current.get("attemptCount") or 1)
    started = vmstatus.attempt_start_epoch(current.get("attempts") or []) or rt.clock()
    inventory = await rt.refresh_inventory(max_age=5.0)
    vm = inventory.vm(request.vmid)
    job = Job(request.key, request.vmid, source, request.target, request.priority)
    found = None
    if not recorded and source:
        # a `qmigrate` of this VM on its source, requested at/after the intent, that no
        # earlier attempt recorded: the task a POST created before its answer was lost
        since = int(started) - CLOCK_SKEW_SECONDS
        found = await rt.client.find_migration_task(
            request.vmid, source, since, recorded_upids(current)
        )
    upid = str(recorded or found or "")
    if upid:
        rt.engine.adopt_running(job, started, number)
        attempt.resume(job, upid, started, vm)
        attempt.probe_at = rt.clock()
        if found:
            await tracking.record_upid(rt, attempt, found)
        log.info("resumed %s: tracking %s", request.key, upid)
        return
    if vm is not None and vm.node == request.target:
        attempt.end()
        note = "found on the target after restart"
        await rt.journal.write(attempt, vmstatus.succeeded(current, rt.clock(), note=note))
        return
    log.info("resumed %s: no task found for the recorded request; queueing again", request.key)
    taken_back = vmstatus.not_sent(current)  # the intent was written, the POST never made
    if taken_back:
        await rt.journal.write(attempt, taken_back)
    await _submit(rt, attempt)


def withdraw(rt: ClusterRuntime, key: str) -> bool:
    """Take back a queued migration before it starts, writing nothing: its owner deletes the
    VMMigration and plans the guest again. True also for one withdrawn earlier and not
    deleted yet; False if it is not queued here, e.g. already started. Synchronous, so no
    start can slip in between check and removal."""
    attempt = rt.attempts.get(key)
    if attempt is None:
        return False
    if attempt.state is AttemptState.QUEUED:
        rt.engine.cancel(key)
        attempt.withdraw()
    return attempt.state is AttemptState.WITHDRAWN


async def cancel(rt: ClusterRuntime, request: MigrationRequest) -> str:
    """Deleting a VMMigration: drop it from the queue or stop its PVE task; the status and
    the Event say what the stopped task left behind."""
    now = rt.clock()
    attempt = rt.attempts.get(request.key)
    if attempt is None:
        return "nothing to cancel"
    attention = False
    if withdraw(rt, request.key):
        message = "cancelled before it started"
    elif attempt.running:
        notes, attention = await stop_task(rt, attempt, "stopping")
        rt.engine.finish(request.key, now, Outcome(False, Reason.CANCELLED, False))
        task = f"PVE task {attempt.upid} stopped" if attempt.upid else "no PVE task known yet"
        stopped = "; ".join([task, *notes])
        message = f"cancelled; {stopped}"
    else:
        return "nothing to cancel"
    attempt.end()
    metrics.MIGRATIONS.labels(rt.label, request.target, "cancelled").inc()
    await rt.journal.write(attempt, vmstatus.cancelled(attempt.status, now, message))
    kind = "Warning" if attention else "Normal"  # something is left for a human to do
    rt.events(request.event_ref, kind, EventReason.MIGRATION_CANCELLED, message)
    return message
