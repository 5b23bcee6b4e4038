"""A look at a running task's log, and what it tells: its end, its progress, its node's clock.

Only the lines written since the last look are read (`start=`). The end line (`TASK OK`,
`TASK ERROR: ...`) ends the attempt as a task list would; the progress predicts when the
transfer ends (runtime/predictions.py) and the stamps time its start phase
(runtime/start_phase.py) and its node's clock (runtime/node_clock.py); its migrate command
tells the datacenter's migration setting (`_observe_transport`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxmigrate.pve.classifier import classify, is_success
from proxmigrate.pve.ha_verdicts import classify_hamigrate
from proxmigrate.pve.task_log import (
    first_clock,
    last_clock,
    log_exitstatus,
    migration_secure,
    transfer_progress,
)
from proxmigrate.pve.upid import parse_upid
from proxmigrate.runtime import predictions, start_phase
from proxmigrate.runtime.attempt import Attempt
from proxmigrate.runtime.node_clock import NodeClock
from proxmigrate.runtime.outcomes import finish

if TYPE_CHECKING:
    from proxmigrate.runtime.cluster import ClusterRuntime


async def look(rt: ClusterRuntime, attempt: Attempt, now: float) -> None:
    """Read the log lines a task wrote since the last look: its end line ends it (a task list
    would say no more), its progress predicts when its transfer ends (runtime/predictions.py)."""
    assert attempt.upid is not None
    node = attempt.task_node
    lines = await rt.client.task_log(node, attempt.upid, start=attempt.log_lines_seen)
    attempt.log_lines_seen += len(lines)
    _observe_clock(rt.node_clocks.of(node), attempt, lines, rt.clock())
    _observe_transport(rt, attempt, lines)
    exitstatus = log_exitstatus(lines)
    if exitstatus is not None:
        await judge_end(rt, attempt, attempt.upid, exitstatus)
        return
    progress = transfer_progress(lines)
    start_phase.observe(rt, attempt, lines, progress, now)
    predictions.update(rt, attempt, progress, now)


async def judge_end(rt: ClusterRuntime, attempt: Attempt, upid: str, exitstatus: str) -> None:
    """An ended task: a success at once, a failure classified from its whole log."""
    if is_success(exitstatus):
        await finish(rt, attempt, None)
        return
    parsed = parse_upid(upid)
    lines = await rt.client.task_log(parsed.node, upid)
    judge = classify_hamigrate if parsed.type == "hamigrate" else classify
    await finish(rt, attempt, judge(exitstatus, lines, attempt.request.target))


def _observe_clock(
    clock: NodeClock, attempt: Attempt, lines: Sequence[str], read_at: float
) -> None:
    """What a log read tells of its node's clock (runtime/node_clock.py): its first stamp
    came after our request, its last was written by the time the read came back. A task
    resumed after a restart has the request time its intent recorded (whole seconds of
    ours, floored: never later than the POST)."""
    if attempt.log_began is None:
        attempt.log_began = first_clock(lines)
        if attempt.log_began is not None:
            clock.requested(attempt.started_at, attempt.log_began)
    last = last_clock(lines)
    if last is not None:
        clock.read(read_at, last)
        if attempt.log_began is not None:
            written = attempt.started_at + (last - attempt.log_began) / clock.rate
            _alive(attempt, min(written, read_at))


def _alive(attempt: Attempt, at: float) -> None:
    """Its worker wrote a line at `at` (ours): alive then, as a task list's `running` row
    would show it, so the safety net's list (runtime/look_schedule.py `SAFETY_NET_SECONDS`)
    is due that long after the line, not after the last list. While the transfer runs,
    qemu-server's phase2 loop writes a progress line every second it sends (PVE 9
    `src/PVE/QemuMigrate.pm`, PVE 8 `PVE/QemuMigrate.pm` phase2: `usleep` of 1 s, then
    `query-migrate`, a line whenever `transferred` moved), so on long transfers the log
    reads made anyway stand in for most of those lists. `at` errs early: it is counted
    from the task's first stamp, written after our request, and a line read late (a
    worker killed long before the read) keeps its own stamp, so a killed worker is still
    seen within the net's time of its last line."""
    attempt.alive_at = max(attempt.alive_at, at)


def _observe_transport(rt: ClusterRuntime, attempt: Attempt, lines: Sequence[str]) -> None:
    """What a live migration's migrate command tells of the datacenter's migration setting
    (read only where it picks the transport: runtime/cluster.py `_settings_due`).
    The worker read the setting after our request (pve-guest-common
    `src/PVE/AbstractMigrate.pm` migrate) and its URI names the transport it chose
    (pve/task_log.py `migration_secure`): the transport the held setting names confirms it
    as of the request, so the re-read before a batch (runtime/cluster.py `OPTIONS_MAX_AGE`)
    is due that long after the newest such request, not after the last read: a drain's own
    first looks keep the setting fresh. The other transport means the setting changed since
    it was read: it is read again before the next batch, which it refuses if need be. So
    after a change a batch starts on the old reading only while that is under
    `OPTIONS_MAX_AGE` old and no look has yet seen a migration that followed the change."""
    secure = migration_secure(lines)
    settings = rt.settings
    if secure is None or settings is None or settings.hidden:
        return
    if secure == settings.secure:
        rt.settings_read_at = max(rt.settings_read_at, attempt.started_at)
    else:
        rt.settings = None  # read again before the next batch (runtime/cluster.py run_once)
