"""How an attempt ended, and what that leaves: the engine's decision, status, Events, metrics.

One failure vocabulary runs through here: the classifier's `failures.Reason` becomes the
engine's outcome, `status.reason`, the retry metric's label and the Event's text.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxmigrate import metrics
from proxmigrate.api.events import EventReason
from proxmigrate.engine import Outcome
from proxmigrate.failures import Failure, Reason
from proxmigrate.pve.errors import PveError
from proxmigrate.runtime.attempt import Attempt, MigrationRequest
from proxmigrate.status import migration as vmstatus

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)


async def finish(rt: ClusterRuntime, attempt: Attempt, failure: Failure | None) -> None:
    """Record how an attempt ended and do what the engine decides."""
    request = attempt.request
    if not attempt.running or attempt.closing:
        return
    attempt.closing = True
    try:  # PVE first: if it fails, the migration keeps its slot and is judged again
        moved = failure is None or failure.vm_moved is True
        if failure is not None and failure.vm_moved is None:
            vm = (await rt.refresh_inventory()).vm(request.vmid)
            moved = vm is not None and vm.node == request.target
        note = ""
        if failure is not None and moved and failure.lock == "migrate":
            note = await _clear_stale_lock(rt, request)
    finally:
        attempt.closing = False
    if not attempt.running:  # cancelled while PVE was read
        return
    now = rt.clock()
    if failure is not None and failure.reason is Reason.SSH_DROPPED:
        metrics.SSH_DROPS.labels(rt.label, request.target).inc()
    outcome = Outcome(
        succeeded=moved,
        reason=failure.reason if failure else None,
        transient=bool(failure and failure.transient),
    )
    decision = rt.engine.finish(attempt.key, now, outcome)
    current = attempt.status
    duration = now - attempt.started_at
    if decision.kind == "done":
        attempt.end()
        metrics.MIGRATIONS.labels(rt.label, request.target, "succeeded").inc()
        metrics.MIGRATION_DURATION.labels(rt.label, "succeeded").observe(duration)
        await rt.journal.write(attempt, vmstatus.succeeded(current, now, failure, note))
        message = f"VM {request.vmid} now on {request.target} after {duration:.1f} s"
        rt.events(request.event_ref, "Normal", EventReason.MIGRATION_SUCCEEDED, message)
        rt.inventory = None  # placement changed: the next reader re-reads
    elif decision.kind == "retry" and failure is not None:
        assert attempt.job is not None
        attempt.queue(attempt.job, now)
        metrics.MIGRATION_RETRIES.labels(rt.label, failure.reason.value).inc()
        retry_at = decision.retry_at or now
        patch = vmstatus.retrying(current, now, failure, retry_at, decision.attempt)
        await rt.journal.write(attempt, patch)
        message = f"attempt {decision.attempt} failed: {failure.summary}"
        rt.events(request.event_ref, "Warning", EventReason.MIGRATION_RETRYING, message)
    else:
        attempt.end()
        metrics.MIGRATIONS.labels(rt.label, request.target, "failed").inc()
        metrics.MIGRATION_DURATION.labels(rt.label, "failed").observe(duration)
        reason = failure.reason if failure else Reason.UNKNOWN
        message = f"attempt {decision.attempt} failed: {failure.summary if failure else 'failed'}"
        await rt.journal.write(attempt, vmstatus.failed(current, now, reason, message, failure))
        rt.events(request.event_ref, "Warning", EventReason.MIGRATION_FAILED, message)
    rt.wake()


async def refused(rt: ClusterRuntime, attempt: Attempt, reason: Reason, message: str) -> None:
    """A request that cannot be met ends before it is queued."""
    request = attempt.request
    attempt.end()
    await rt.journal.write(attempt, vmstatus.failed(attempt.status, rt.clock(), reason, message))
    metrics.MIGRATIONS.labels(rt.label, request.target, "failed").inc()
    rt.events(request.event_ref, "Warning", EventReason.MIGRATION_FAILED, message)


async def _clear_stale_lock(rt: ClusterRuntime, request: MigrationRequest) -> str:
    """After a dropped final `qm unlock` the VM runs on the target still locked `migrate`."""
    try:
        await rt.client.unlock_vm(request.target, request.vmid)
    except PveError as error:
        return (
            f"VM {request.vmid} moved but keeps lock 'migrate' on {request.target} "
            f"(clearing it failed: {error}); run 'qm unlock {request.vmid}' there"
        )
    return f"VM {request.vmid} moved; stale 'migrate' lock cleared"


def export_metrics(rt: ClusterRuntime) -> None:
    """Queue and per-target gauges and counters for every node the inventory lists (and any
    target the engine knows): an idle one reports 0 in flight rather than its last busy
    value, and its counters exist at 0 before their first event: created once, when the
    cluster or the target first shows, not every tick (`drain-1g`: 59 -> 30 ms of CPU here)."""
    snapshot = rt.engine.snapshot(rt.clock())
    metrics.MIGRATIONS_QUEUED.labels(rt.label).set(snapshot.queued)
    targets = rt.metric_targets
    if not targets:  # nothing exported yet
        metrics.count_cluster_from_zero(rt.label, (reason.value for reason in Reason))
    seen = set(snapshot.limit_per_target)
    if rt.inventory is not None:
        seen.update(node.name for node in rt.inventory.nodes)
    for target in seen - targets:
        metrics.count_from_zero(rt.label, target)
    targets |= seen
    for target in targets:
        limit = rt.engine.concurrency_limit(target)
        metrics.TARGET_CONCURRENCY_LIMIT.labels(rt.label, target).set(limit)
        metrics.MIGRATIONS_IN_FLIGHT.labels(rt.label, target).set(
            snapshot.running_per_target.get(target, 0)
        )
