"""Starting what the engine allows: the intent written first, then the migration request.

Intent before POST: status `Running` with the attempt's start time reaches the API server
before the request goes to PVE, and the UPID is recorded as soon as PVE answers, so a
restarted operator looks for the task instead of sending the request again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxmigrate import metrics
from proxmigrate.api.events import EventReason
from proxmigrate.engine import Outcome
from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.pve.classifier import classify_api_error
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveUnreachable
from proxmigrate.runtime.attempt import Attempt, AttemptState
from proxmigrate.runtime.outcomes import finish
from proxmigrate.runtime.stopping import stop_task
from proxmigrate.runtime.tracking import record_upid
from proxmigrate.status import migration as vmstatus

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)


def due(rt: ClusterRuntime, now: float) -> list[Attempt]:
    """The queued attempts the engine lets start now, each given its slot."""
    started = []
    for job in rt.engine.poll(now):
        attempt = rt.attempts.get(job.key)
        if attempt is None or attempt.state is not AttemptState.QUEUED:  # cancelled meanwhile
            rt.engine.finish(job.key, now, Outcome(False, Reason.CANCELLED, False))
            continue
        metrics.MIGRATION_QUEUE_WAIT.labels(rt.label).observe(now - attempt.queued_at)
        attempt.start(now)
        started.append(attempt)
    return started


async def start(rt: ClusterRuntime, attempt: Attempt) -> None:
    request = attempt.request
    number = int(attempt.status.get("attemptCount") or 0) + 1
    intent = vmstatus.start_requested(attempt.status, attempt.source, number, attempt.started_at)
    try:
        written = await rt.journal.write(attempt, intent, required=True)
    except Exception as error:  # the API server failed us: nothing was sent to PVE yet
        log.warning("%s: recording the start failed (%s); queueing again", request.key, error)
        _requeue_unsent(rt, attempt)
        return
    written_at = rt.clock()
    if written is None:  # the VMMigration was deleted meanwhile
        rt.engine.finish(attempt.key, rt.clock(), Outcome(False, Reason.CANCELLED, False))
        rt.attempts.drop(attempt)
        return
    try:
        upid = await _post(rt, attempt)
    except PveApiError as error:  # PVE refused: no task exists
        await finish(rt, attempt, classify_api_error(error.status, error.text, error.errors))
        return
    except (PveAuthError, ValueError, TypeError) as error:
        # Nothing started: PVE rejected the login (401 comes before any work), or the client
        # refused its arguments before sending (a bug here, e.g. `migration_type` without
        # root@pam). Waiting for a task would only delay this by UNCONFIRMED_TASK_TIMEOUT;
        # new credentials may fix the first, nothing the second.
        log.error("%s: the migration request was not sent: %s", request.key, error)
        transient = isinstance(error, PveAuthError)
        failure = Failure(Reason.API_ERROR, transient, FailurePhase.API, str(error), False)
        await finish(rt, attempt, failure)
        return
    except PveUnreachable as error:
        if not error.request_may_have_arrived:
            failure = Failure(Reason.API_ERROR, True, FailurePhase.API, str(error), False)
            await finish(rt, attempt, failure)
            return
        upid = None
    except Exception:
        log.exception("%s: the migration request failed unexpectedly", request.key)
        upid = None
    if attempt.state is not AttemptState.STARTING:  # cancelled while the request was out
        if upid:  # nobody follows that task: stop it rather than let the guest move
            attempt.upid = upid
            notes, _ = await stop_task(rt, attempt, "stopping the cancelled")
            log.warning("%s: cancelled during its request; %s stopped %s", request.key, upid, notes)
        return
    log.info(
        "%s: VM %s %s -> %s requested (%s): queued %.2f s, intent written in %.2f s, "
        "answered in %.2f s",
        request.key,
        request.vmid,
        attempt.source,
        request.target,
        upid or "answer lost",
        attempt.started_at - attempt.queued_at,
        written_at - attempt.started_at,
        rt.clock() - written_at,
    )
    if upid:
        await record_upid(rt, attempt, upid)
    else:  # the answer was lost: find its task before retrying
        attempt.lose_answer()
    rt.events(
        request.event_ref,
        "Normal",
        EventReason.MIGRATION_STARTED,
        f"VM {request.vmid}: {attempt.source} -> {request.target} ({upid or 'task pending'})",
    )
    rt.wake()


async def _post(rt: ClusterRuntime, attempt: Attempt) -> str:
    """The migration request. For an HA-managed guest PVE answers a `hamigrate` task and the
    HA manager starts the `qmigrate` later (qemu-server API2/Qemu.pm migrate_vm); this needs
    only `VM.Migrate`, where the HA endpoint needs `Sys.Console` on `/`."""
    request, vm, policy = attempt.request, attempt.vm, rt.policy
    return await rt.client.migrate(
        attempt.source,
        request.vmid,
        request.target,
        online=request.online and (vm is None or vm.running),
        with_local_disks=request.with_local_disks,
        bwlimit_kib=request.bandwidth_limit_kib or policy.bandwidth_limit_kib,
        migration_type=policy.type.value if rt.client.can_choose_migration_type else None,
    )


def _requeue_unsent(rt: ClusterRuntime, attempt: Attempt) -> None:
    decision = rt.engine.finish(attempt.key, rt.clock(), Outcome(False, Reason.API_ERROR, True))
    if decision.kind == "retry" and attempt.job is not None:
        attempt.queue(attempt.job, rt.clock())
    else:
        rt.attempts.drop(attempt)


def failed_unexpectedly(rt: ClusterRuntime, error: BaseException | None) -> None:
    """A start that failed unexpectedly may have sent its request: its attempts still without
    a task are looked for in the task lists (and time out) like lost answers."""
    log.error("cluster %s: starting a migration failed", rt.label, exc_info=error)
    for attempt in rt.attempts.in_state(AttemptState.STARTING):
        if not attempt.closing:
            attempt.lose_answer()
    rt.wake()
