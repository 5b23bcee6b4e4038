"""A drain in library mode: proxmigrate's planner and engine drive pvesim's model on virtual time.

The loop copies the operator's (`proxmigrate.runtime.cluster.ClusterRuntime`): each pass it
asks the engine who may start and POSTs those migrations; every `task_poll_seconds` it reads
one task list per node that runs a tracked task, fetches the log of each failed task for the
classifier, and reports every attempt's end to the engine. It sleeps as the runtime does: at
most `task_poll_seconds`, less when the engine's next start is due sooner, and briefly after
anything started or ended (the runtime's wake-up event). Each request the operator would
send is counted.

As the runtime does, it predicts each transfer's end from a log read or two
(`transfer_seconds_left`) and announces the end-phase logins to the engine, and it finds the
`qmigrate` of an HA request (which returns no UPID) in the source's task list.

Differences from the operator, on purpose: API calls take no virtual time (a real request
takes tens of milliseconds), and status writes to the Kubernetes API are not modelled.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from proxmigrate.engine import EnginePolicy, Job, MigrationEngine, Outcome
from proxmigrate.inventory import Inventory, NodeInfo
from proxmigrate.planning import DrainPlan, DrainRequest, PlannedMove, memory_need, plan_drain
from proxmigrate.pve.classifier import Failure, Phase, Reason, classify, classify_api_error
from proxmigrate.pve.client import TASK_LOG_PAGE
from proxmigrate.pve.tracker import (
    TrackedTask,
    evaluate,
    nodes_to_poll,
    poll_since,
    transfer_seconds_left,
)
from proxmigrate.runtime.cluster import (
    CLOCK_SKEW_SECONDS,
    OPTIONS_MAX_AGE,
    REPROBE_AFTER_SHARE,
    REPROBE_MIN_SECONDS,
    UNCONFIRMED_TASK_TIMEOUT,
)
from proxmigrate.simulate.inventory import inventory_from_model
from pvesim.model import ApiError, Cluster
from pvesim.views import task_row

USER = "root@pam!proxmigrate"  # an API token, as the operator uses
RUNTIME_MIN_SLEEP = 0.02  # the runtime never sleeps less (ClusterRuntime.run)


@dataclass(frozen=True)
class DrainOptions:
    # The runtime's `--task-poll-seconds` default: one task list per node this often, and the
    # longest sleep of its loop.
    task_poll_seconds: float = 2.0
    wake_delay: float = 0.05  # next loop after a start or an end: assumption (one API round trip)
    local_disks: str = "migrate"
    stopped_vms: str = "migrate"
    deadline_seconds: float = 12 * 3600.0  # virtual; a drain still running then is cut off


@dataclass(frozen=True)
class Progress:
    elapsed: float  # virtual seconds since the drain began
    done: int
    failed: int
    running: int
    total: int


@dataclass
class DrainResult:
    started_at: float
    observed_end: float  # when the loop saw every job final (virtual epoch seconds)
    plans: tuple[DrainPlan, ...]
    succeeded: int
    failed: dict[int, str]  # vmid -> reason of the last attempt
    retries: int
    api_requests: Counter[str]
    cpu_seconds: float  # spent in proxmigrate's code (planner, engine, tracker, classifier)
    cut_off: bool  # the deadline passed before every job ended

    @property
    def planned(self) -> int:
        return sum(len(plan.moves) for plan in self.plans)

    @property
    def total_api_requests(self) -> int:
        return sum(self.api_requests.values())


@dataclass
class _Attempt:
    move: PlannedMove
    started_at: float
    upid: str | None = None
    unconfirmed_since: float | None = None  # an HA request: its qmigrate is yet to be found
    probe_at: float | None = None  # next log read to predict the transfer's end
    ending_at: float | None = None  # predicted end of the transfer
    log_lines_seen: int = 0


@dataclass
class _CpuMeter:
    seconds: float = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        began = time.process_time()
        try:
            yield
        finally:
            self.seconds += time.process_time() - began


@dataclass
class LibraryDrain:
    """Drain `nodes` of `cluster` at once under `policy`; `run()` once."""

    cluster: Cluster
    nodes: Sequence[str]
    policy: EnginePolicy
    options: DrainOptions = field(default_factory=DrainOptions)
    seed: int = 0
    engine: MigrationEngine = field(init=False)
    _queued: dict[str, PlannedMove] = field(default_factory=dict)
    _running: dict[str, _Attempt] = field(default_factory=dict)
    _succeeded: int = 0
    _failed: dict[int, str] = field(default_factory=dict)
    _retries: int = 0
    _requests: Counter[str] = field(default_factory=Counter)
    _cpu: _CpuMeter = field(default_factory=_CpuMeter)
    _settings_read_at: float = -math.inf
    _tracked_at: float = -math.inf

    def __post_init__(self) -> None:
        self.engine = MigrationEngine(self.policy, random.Random(self.seed))

    def plan(self) -> tuple[DrainPlan, ...]:
        """One plan per node, each seeing the previous plans' moves as done."""
        self._requests["GET cluster/resources"] += 1
        with self._cpu.measure():
            inventory = inventory_from_model(self.cluster)
            plans = []
            for node in self.nodes:
                request = DrainRequest(
                    node=node,
                    cordoned=frozenset(self.nodes),
                    local_disks=self.options.local_disks,  # type: ignore[arg-type]
                    stopped_vms=self.options.stopped_vms,  # type: ignore[arg-type]
                )
                plan = plan_drain(inventory, request)
                plans.append(plan)
                inventory = _after(inventory, plan)
        return tuple(plans)

    def run(self, progress: Callable[[Progress], None] | None = None) -> DrainResult:
        started_at = self.cluster.now
        plans = self.plan()
        with self._cpu.measure():
            for move in _interleaved(plans):
                key = f"vm-{move.vmid}"
                job = Job(key, move.vmid, move.source, move.target, size_bytes=move.transfer_bytes)
                self.engine.submit(job, started_at)
                self._queued[key] = move
        total = len(self._queued)
        now = started_at
        deadline = started_at + self.options.deadline_seconds
        while (self._queued or self._running) and now < deadline:
            acted = self._tick(now)
            now = self._next_loop(now, acted)
            self.cluster.advance_to(now)
            if progress is not None:
                progress(
                    Progress(
                        now - started_at,
                        self._succeeded,
                        len(self._failed),
                        len(self._running),
                        total,
                    )
                )
        self.cluster.run_until_idle()
        return DrainResult(
            started_at=started_at,
            observed_end=now,
            plans=plans,
            succeeded=self._succeeded,
            failed=dict(self._failed),
            retries=self._retries,
            api_requests=self._requests,
            cpu_seconds=self._cpu.seconds,
            cut_off=bool(self._queued or self._running),
        )

    # ----- one loop of the runtime -------------------------------------------------------

    def _next_loop(self, now: float, acted: bool) -> float:
        delay = self.options.task_poll_seconds
        with self._cpu.measure():
            wakeup = self.engine.next_wakeup(now)
        if wakeup is not None:
            delay = min(delay, wakeup - now)
        if acted:
            delay = min(delay, self.options.wake_delay)
        return now + max(delay, RUNTIME_MIN_SLEEP)

    def _tick(self, now: float) -> bool:
        acted = False
        if self._queued:
            if now - self._settings_read_at > OPTIONS_MAX_AGE:
                self._requests["GET cluster/options"] += 1
                self._settings_read_at = now
            with self._cpu.measure():
                starting = self.engine.poll(now)
            for job in starting:
                self._start(self._queued.pop(job.key), job.key, now)
                acted = True
        self._announce_endings(now)
        poll_due = now - self._tracked_at >= self.options.task_poll_seconds
        watched = any(a.upid or a.unconfirmed_since is not None for a in self._running.values())
        if poll_due and watched:
            self._tracked_at = now
            acted = self._track(now) or acted
        return acted

    def _start(self, move: PlannedMove, key: str, now: float) -> None:
        vm = self.cluster.vms[move.vmid]
        attempt = _Attempt(move, now)
        self._running[key] = attempt
        try:
            if vm.ha_managed:
                self._requests["POST ha/resources/{sid}/migrate"] += 1
                self.cluster.ha.request(move.vmid, move.target)
                attempt.unconfirmed_since = now
                return
            self._requests["POST migrate"] += 1
            upid = self.cluster.migrate(
                move.source,
                move.vmid,
                move.target,
                user=USER,
                online=vm.running,
                with_local_disks=move.with_local_disks,
            )
        except ApiError as error:
            with self._cpu.measure():
                failure = classify_api_error(error.status, error.message, error.errors)
            self._finish(key, failure, now)
            return
        self._record_upid(attempt, upid, now)

    def _record_upid(self, attempt: _Attempt, upid: str, now: float) -> None:
        attempt.upid = upid
        attempt.unconfirmed_since = None
        attempt.probe_at = now + self._first_probe_delay

    @property
    def _first_probe_delay(self) -> float:
        return 2 * self.engine.policy.start_window_seconds

    def _track(self, now: float) -> bool:
        acted = self._find_unconfirmed(now)
        with self._cpu.measure():
            tracked = {
                key: TrackedTask(attempt.move.vmid, attempt.upid, attempt.move.source)
                for key, attempt in self._running.items()
                if attempt.upid
            }
            since = poll_since(tracked.values())
            nodes = sorted(nodes_to_poll(tracked.values()))
        self._requests["GET nodes/{node}/tasks"] += len(nodes)
        lists = {node: self._task_list(node, since) for node in nodes}
        with self._cpu.measure():
            result = evaluate(list(tracked.values()), lists)
        by_upid = {task.upid: key for key, task in tracked.items()}
        for end in result.finished:
            key = by_upid[end.task.upid]
            failure = None
            if not end.succeeded:
                lines = self.cluster.tasks[end.task.upid].lines
                self._count_log_read(len(lines))
                with self._cpu.measure():
                    failure = classify(end.exitstatus, lines, self._running[key].move.target)
            self._finish(key, failure, now)
            acted = True
        self._probe_transfers(now)
        return acted

    def _find_unconfirmed(self, now: float) -> bool:
        """The runtime's search for an HA request's `qmigrate`: one filtered task list each."""
        acted = False
        for key, attempt in list(self._running.items()):
            if attempt.upid or attempt.unconfirmed_since is None:
                continue
            self._requests["GET nodes/{node}/tasks"] += 1
            since = attempt.unconfirmed_since - CLOCK_SKEW_SECONDS
            for task in self.cluster.tasks.values():
                upid = task.upid
                if (
                    upid.node == attempt.move.source
                    and upid.type == "qmigrate"
                    and upid.id == str(attempt.move.vmid)
                    and task.starttime >= since
                ):
                    self._record_upid(attempt, str(upid), now)
                    break
            else:
                if now - attempt.unconfirmed_since > UNCONFIRMED_TASK_TIMEOUT:
                    message = f"no migration task appeared within {UNCONFIRMED_TASK_TIMEOUT:.0f} s"
                    failure = Failure(Reason.TIMEOUT, True, Phase.API, message, False)
                    self._finish(key, failure, now)
                    acted = True
        return acted

    def _probe_transfers(self, now: float) -> None:
        """The runtime's end prediction: read new log lines once or twice per task."""
        for attempt in self._running.values():
            if not attempt.upid or attempt.probe_at is None or now < attempt.probe_at:
                continue
            lines = self.cluster.tasks[attempt.upid].lines[attempt.log_lines_seen :]
            self._count_log_read(len(lines))
            attempt.log_lines_seen += len(lines)
            with self._cpu.measure():
                left = transfer_seconds_left(lines)
            if left is None:
                attempt.probe_at = now + self._first_probe_delay
                continue
            attempt.ending_at = now + left
            attempt.probe_at = (
                now + left * REPROBE_AFTER_SHARE if left > REPROBE_MIN_SECONDS else None
            )

    def _announce_endings(self, now: float) -> None:
        lead = self.engine.policy.end_spread_seconds
        with self._cpu.measure():
            for key, attempt in self._running.items():
                if attempt.ending_at is not None and now >= attempt.ending_at - lead:
                    self.engine.notify_ending(key, now)

    def _count_log_read(self, lines: int) -> None:
        self._requests["GET tasks/{upid}/log"] += max(1, -(-lines // TASK_LOG_PAGE))

    def _task_list(self, node: str, since: int | None) -> list[dict[str, Any]]:
        """`GET /nodes/{node}/tasks?source=all&since=...` as pvesim answers it."""
        return [
            task_row(task)
            for task in self.cluster.tasks.values()
            if task.upid.node == node and (since is None or task.starttime >= since)
        ]

    def _finish(self, key: str, failure: Failure | None, now: float) -> None:
        """As `ClusterRuntime._finish`: decide whether the VM moved, clear a stale lock."""
        attempt = self._running.pop(key)
        move = attempt.move
        moved = failure is None or failure.vm_moved is True
        if failure is not None and failure.vm_moved is None:
            self._requests["GET cluster/resources"] += 1
            moved = self.cluster.vms[move.vmid].node == move.target
        if failure is not None and moved and failure.lock == "migrate":
            self._requests["PUT config (unlock)"] += 1
            self.cluster.set_lock(move.vmid, None)
        outcome = Outcome(
            succeeded=moved,
            reason=failure.reason.value if failure else None,
            transient=bool(failure and failure.transient),
        )
        with self._cpu.measure():
            decision = self.engine.finish(key, now, outcome)
        if decision.kind == "done":
            self._succeeded += 1
        elif decision.kind == "retry":
            self._retries += 1
            self._queued[key] = move
        else:
            self._failed[move.vmid] = outcome.reason or "unknown"


def _interleaved(plans: Iterable[DrainPlan]) -> list[PlannedMove]:
    """Plans' moves round-robin, each plan in its own order (two drains created together)."""
    lanes = [list(plan.moves) for plan in plans]
    merged: list[PlannedMove] = []
    for index in range(max((len(lane) for lane in lanes), default=0)):
        merged.extend(lane[index] for lane in lanes if index < len(lane))
    return merged


def _after(inventory: Inventory, plan: DrainPlan) -> Inventory:
    """The inventory as it will be once `plan` ran: guests on their targets, memory booked."""
    targets = {move.vmid: move.target for move in plan.moves}
    vms = tuple(
        replace(vm, node=targets[vm.vmid]) if vm.vmid in targets else vm for vm in inventory.vms
    )
    added: Counter[str] = Counter()
    for move in plan.moves:
        vm = inventory.vm(move.vmid)
        if vm is not None:
            added[move.target] += memory_need(vm)
    nodes = tuple(_with_memory(node, added[node.name]) for node in inventory.nodes)
    return Inventory(nodes=nodes, vms=vms, taken_at=inventory.taken_at)


def _with_memory(node: NodeInfo, added: int) -> NodeInfo:
    return replace(node, used_memory=node.used_memory + added) if added else node
