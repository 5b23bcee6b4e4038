"""When a running migration's transfer ends, predicted from its task log (no I/O).

The runtime reads a task's log a few times (runtime/log_look.py); each read's progress lines
(qemu-server `src/PVE/QemuMigrate.pm` phase2: `migration active, transferred X of Y
VM-state, Z/s`, PVE 8 and 9 alike) give the engine the stream's rate on the wire (not the
logged `Z`, which counts zero pages: pve/task_log.py `TransferProgress.rate`) and the
attempt its predicted end (`ending_at`) and next log read (`probe_at`). The log's rate is
per second of its node's clock, which need not run at ours (runtime/node_clock.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from proxmigrate.pve.task_log import TransferProgress
from proxmigrate.runtime.attempt import Attempt

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime

REPROBE_AFTER_SHARE = 0.7  # re-read a long transfer's rate when this share of its ETA passed
REPROBE_MIN_SECONDS = 30.0  # transfers predicted to end sooner are not read again before it
# A transfer re-sending dirtied pages is read again after this share of the time it has run,
# and not sooner than RESEND_MIN_SECONDS.
RESEND_RECHECK_SHARE = 0.5
RESEND_MIN_SECONDS = 10.0
# A task still running this many polls after its predicted end and end phase has its log
# read again: the transfer was slower than predicted.
OVERDUE_POLLS = 2
# A transfer past the guest's memory in use may end any moment (what is left are pages
# written meanwhile, not in the log): its log is read again this soon at the earliest. At
# the first look's 10.5 s (2 x the start window) such ends were seen 5 s late on average,
# each holding its slot, once fewer task lists watched their nodes (bench/RESULTS.md,
# issue 13, tenth pass).
MAY_END_RECHECK_SECONDS = 6.0
# ... and this soon for a stream alone on its links: until its end is seen they idle, the
# next migration not started (issue 13, twenty-fourth pass).
MAY_END_ALONE_RECHECK_SECONDS = 3.0
# What a look is worth in seconds an end is seen late: it spaces the looks at a re-send
# (`may_end_recheck`).
LOOK_WORTH_LATE_SECONDS = 1.5


def first_probe_delay(rt: ClusterRuntime) -> float:
    """Read a task's log once its tunnel is up and the transfer rate has settled."""
    return 2 * rt.engine.policy.start_window_seconds


def first_look(rt: ClusterRuntime, attempt: Attempt) -> float:
    """A stopped guest moves without a RAM transfer (its config, and disks if any, after
    one start-up): looked at once the start phase is over; a running one once its rate has
    settled, later where its links are declared (`first_look_deferral`)."""
    if _stopped(attempt):
        return rt.engine.policy.start_window_seconds
    return first_probe_delay(rt) + first_look_deferral(rt, attempt)


def _stopped(attempt: Attempt) -> bool:
    return attempt.vm is not None and not attempt.vm.running


def first_look_deferral(rt: ClusterRuntime, attempt: Attempt) -> float:
    """How much later a running guest's first look comes: one task poll where its source's
    and its target's links are both declared (`nodeLinks`), else none.

    A third of first looks at 2 x the start window found the transfer over and the task in
    its end phase, which cost a second look (bench/RESULTS.md, issue 13, twelfth pass);
    with both links declared, the engine's rules 7 and 8 have them without this stream's
    rate. Where a link is only told by streams, these rates are what it is learnt from:
    2 s later cost drain-25g-source and drain-25g-into-5g (twelfth and twenty-third
    passes). A deferred look is made on time after all when its source waits for its rate
    (runtime/look_schedule.py `needs_log`)."""
    policy = rt.engine.policy
    links = policy.declared_link(attempt.source), policy.declared_link(attempt.request.target)
    return 0.0 if _stopped(attempt) or None in links else rt.task_poll_seconds


def ending(rt: ClusterRuntime, attempt: Attempt, now: float) -> bool:
    """Its task may end any moment: the predicted end of its transfer plus the shortest end
    phase has passed, and no log read is planned before it."""
    if attempt.probe_at is not None or attempt.ending_at is None:
        return False
    return now >= attempt.ending_at + rt.engine.policy.end_spread_seconds


def update(
    rt: ClusterRuntime, attempt: Attempt, progress: TransferProgress | None, now: float
) -> None:
    """What a log read's last progress says: the stream's rate to the engine, the attempt's
    predicted end and next log read.

    The prediction is the earliest end: QEMU sends a zero page as a flag, not as its bytes
    (QEMU `migration/ram.c` save_zero_page, `RAM_SAVE_FLAG_ZERO`), and `transferred` counts
    bytes sent, so a stream may end once the guest's memory in use (`mem` of
    `/cluster/resources`, what a migration copies at least: freed pages are not zero) is
    sent, well before its size (`Y` of `transferred X of Y`, `ram.total`). Task lists (or,
    alone on its node, its log) watch it from then on; a transfer still running well after
    it has its log read again; one past its memory in use (the rest, pages written
    meanwhile, is not in the log) at spacings growing with the time past it
    (`may_end_recheck`); a long one when most of its predicted time passed; one
    re-sending past the guest's size after a share of the time it has run. An end the log
    cannot tell is not announced (`look_schedule.end_unknown`).
    """
    assert attempt.upid is not None
    rate = rt.node_clocks.rate(attempt.task_node)  # its seconds per ours
    if progress is not None and progress.completed:  # the memory is sent: its link is free
        # `migration status: completed` ends phase2's loop (qemu-server src/PVE/QemuMigrate.pm
        # phase2, PVE 8 and 9); a predicted end (`ending_at`) does not free the link
        rt.engine.notify_transfer_ended(attempt.key)
    if progress is not None and progress.rate > 0:
        dirty = progress.dirty_bounds((now - attempt.started_at) * rate)
        rt.engine.observe_rate(attempt.key, progress.rate, dirty, now)
    if progress is None or not (progress.rate > 0 or progress.completed):
        if attempt.ending_at is not None and attempt.probe_at is None:
            _still_ending(rt, attempt, now)
            return
        attempt.probe_at = now + first_probe_delay(rt)
        if attempt.ending_at is not None:  # an earlier prediction, not confirmed
            attempt.ending_at = attempt.probe_at
        return
    left = progress.seconds_left
    if left is None:  # re-sending dirtied pages: look again later, announce nothing
        look = max(RESEND_MIN_SECONDS, RESEND_RECHECK_SHARE * (now - attempt.started_at))
        attempt.ending_at = attempt.probe_at = now + look
        return
    used = attempt.vm.used_memory if attempt.vm is not None and not progress.completed else 0
    if used and progress.transferred >= used:  # past the memory in use: it may end any time
        past = (progress.transferred - used) / progress.rate / rate
        recheck = may_end_recheck(attempt, rt.attempts.running, past)
        attempt.ending_at, attempt.probe_at = now, now + recheck
        return
    if used:
        left = min(left, (used - progress.transferred) / progress.rate)
    left /= rate  # the log's seconds, and its rate's, are its node's
    attempt.ending_at = now + left
    if left > REPROBE_MIN_SECONDS:
        attempt.probe_at = now + left * REPROBE_AFTER_SHARE
    else:  # the end is near: task lists from its earliest end on (`ending`)
        attempt.probe_at = None


def may_end_recheck(attempt: Attempt, running: Iterable[Attempt], past: float) -> float:
    """Seconds to the next look at a transfer re-sending pages for `past` seconds since it
    passed the guest's memory in use.

    phase2 logs neither QEMU's `remaining` nor the dirty rate unless it exceeds the
    stream's (qemu-server `src/PVE/QemuMigrate.pm` phase2, `$dirty_rate > $speed`; PVE 8
    and 9 alike), so still sending after `past` seconds shows only that the guest dirties
    at least past / (first pass + past) of what the stream sends. For a dirty rate of
    unknown scale that puts the chance of the end within the next `d` seconds at about
    d / past at most, and looks sqrt(2 x LOOK_WORTH_LATE_SECONDS x past) apart weigh a look
    against the seconds its end is seen late: dense while the re-send is young, sparse on
    a long one (bench/RESULTS.md, issue 13, twenty-fourth pass: a fixed spacing saving
    about as many cost `drain-1g` 8 s). Never sooner than MAY_END_RECHECK_SECONDS, or
    MAY_END_ALONE_RECHECK_SECONDS when no other migration of ours shares its source or
    target: its end idles their links until it is seen."""
    job = attempt.job
    assert job is not None, "only a running attempt is looked at"
    shared = any(
        other is not attempt
        and other.job is not None
        and (other.job.source == job.source or other.job.target == job.target)
        for other in running
    )
    earliest = MAY_END_RECHECK_SECONDS if shared else MAY_END_ALONE_RECHECK_SECONDS
    return max(earliest, math.sqrt(2 * LOOK_WORTH_LATE_SECONDS * past))


def _still_ending(rt: ClusterRuntime, attempt: Attempt, now: float) -> None:
    """A read past its predicted end shows no progress line: nothing is sent now, its end
    phase runs (qemu-server `src/PVE/QemuMigrate.pm` phase3_cleanup: the guest resumed on
    the target, cleanup and `qm unlock` there; docs/reference/proxmox.md, "SSH connections
    of one migration") and its task may end any moment. Task lists go on from now
    (`ending`), its log is read again after the overdue time. Taken as a log without a
    transfer yet, its end was pushed back to a first look: a slow end phase was seen ended
    ~10 s late, its slot held."""
    attempt.ending_at = now - rt.engine.policy.end_spread_seconds
