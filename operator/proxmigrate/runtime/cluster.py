"""One ProxmoxCluster at run time: its PVE client, engine, inventory and running migrations.

The kopf handlers only translate events into calls on this object; it owns the loop that
asks the engine who may start, issues the migrations, tracks their tasks in batches (one
task list per node per tick) and writes every VMMigration status change to the API server
before acting on it, so that a restarted operator resumes instead of repeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any, Protocol

from proxmigrate import metrics
from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.api.constants import API_VERSION, VM_MIGRATION, VMMIGRATIONS
from proxmigrate.api.enums import AuthMethod, ClusterMigrationType
from proxmigrate.engine import Job, MigrationEngine, Outcome
from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.classifier import (
    Failure,
    Phase,
    Reason,
    classify,
    classify_api_error,
    classify_hamigrate,
    classify_unstarted_ha,
)
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveError, PveUnreachable
from proxmigrate.pve.local_resources import LocalResources
from proxmigrate.pve.resources import MigrationSettings
from proxmigrate.pve.tracker import (
    TrackedTask,
    evaluate,
    first_migration_since,
    nodes_to_poll,
    poll_since,
    transfer_progress,
)
from proxmigrate.pve.upid import parse_upid
from proxmigrate.runtime import status as vmstatus

log = logging.getLogger(__name__)

OPTIONS_MAX_AGE = 10.0  # re-read the datacenter migration setting before a batch if older
MIN_TICK_SECONDS = 0.02  # the loop never spins faster than this
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
# A tick that failed is tried again after this, doubling per failure up to ERROR_BACKOFF_MAX.
ERROR_BACKOFF_SECONDS = 1.0
ERROR_BACKOFF_MAX = 10.0
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
# A VMMigration ended here is not taken again for this long: a listing taken before its
# final status was written still shows it unfinished.
ENDED_MEMORY_SECONDS = 600.0


@dataclass(frozen=True)
class MigrationRequest:
    """What a VMMigration asks for (its immutable spec) and where it lives."""

    namespace: str
    name: str
    uid: str
    vmid: int
    target: str
    source: str | None = None
    online: bool = True
    with_local_disks: bool = False
    bandwidth_limit_kib: int | None = None
    priority: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def event_ref(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": VM_MIGRATION.kind,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }


@dataclass
class _Running:
    request: MigrationRequest
    job: Job
    upid: str | None
    started_at: float
    awaiting_task: bool = False  # request sent at started_at, its task not identified yet
    ha_queued_at: float | None = None  # when its `hamigrate` was first seen ended OK
    probe_at: float | None = None  # when to read the task log for its transfer rate next
    log_lines_seen: int = 0
    ending_at: float | None = None  # predicted end of the RAM transfer
    vm: VMInfo | None = None  # as the inventory showed it when queued (HA-managed, running)
    closing: bool = False  # `_finish` is reading PVE before it lets the slot go


@dataclass
class _Queued:
    request: MigrationRequest
    job: Job
    submitted_at: float
    vm: VMInfo | None = None


class StatusWriter(Protocol):
    """Where VMMigration status goes: the API server (`proxmigrate.kube.Kube`), or a log of
    the documents in library mode."""

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...


EventSink = Callable[[Mapping[str, Any], str, str, str], None]


def _no_events(ref: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """Default sink: tests without kopf's posting machinery."""


@dataclass
class ClusterRuntime:
    """Live state of one ProxmoxCluster; see the module docstring."""

    namespace: str
    name: str
    client: AsyncPveClient
    policy: MigrationPolicySpec
    auth: AuthMethod
    kube: StatusWriter
    events: EventSink = _no_events
    clock: Callable[[], float] = time.time
    task_poll_seconds: float = 2.0
    engine: MigrationEngine = field(init=False)
    inventory: Inventory | None = None
    local_resources: LocalResources = field(default_factory=LocalResources)
    settings: MigrationSettings | None = None
    settings_read_at: float = 0.0
    _queued: dict[str, _Queued] = field(default_factory=dict)
    _running: dict[str, _Running] = field(default_factory=dict)
    _statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    _withdrawn: set[str] = field(default_factory=set)  # taken back, VMMigration not deleted yet
    _accepting: set[str] = field(default_factory=set)  # accept() in progress
    _ended: dict[str, float] = field(default_factory=dict)  # uid -> when its end was written
    # status patches the API server has not confirmed yet, merged per VMMigration, in order
    _unwritten: dict[str, tuple[MigrationRequest, dict[str, Any]]] = field(default_factory=dict)
    # the loop's health: when it last completed a tick (monotonic), why the last tick failed
    heartbeat: float = field(default_factory=time.monotonic)
    loop_error: str | None = None
    failed_ticks: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _inventory_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _last_track: float = 0.0
    _metric_targets: set[str] = field(default_factory=set)  # targets with exported gauges
    # an engine built elsewhere (library mode: seeded, or a policy the spec cannot express)
    engine_override: InitVar[MigrationEngine | None] = None

    def __post_init__(self, engine_override: MigrationEngine | None) -> None:
        self.engine = engine_override or MigrationEngine(self.policy.to_engine_policy())

    # ----- configuration and inventory -------------------------------------------------

    def update_policy(self, policy: MigrationPolicySpec) -> None:
        self.policy = policy
        self.engine.update_policy(policy.to_engine_policy())
        self._wake.set()

    async def refresh_inventory(
        self, max_age: float = 0.0, *, local_for: Callable[[VMInfo], bool] | None = None
    ) -> Inventory:
        """The inventory, re-read when older than `max_age` (one `GET /cluster/resources`).

        The only inventory path, for the operator and `proxmigrate simulate` alike. Guests
        picked by `local_for` (those about to be planned) get their local disks and devices
        from PVE's precondition check, kept across reads (pve/local_resources.py); the
        others carry what is kept for them."""
        async with self._inventory_lock:
            now = self.clock()
            if self.inventory is None or now - self.inventory.taken_at > max_age:
                began = time.monotonic()
                self.inventory = self.local_resources.apply(await self.client.inventory())
                metrics.INVENTORY_SYNC_DURATION.labels(self.label).observe(time.monotonic() - began)
            if local_for is not None:
                self.inventory = await self.local_resources.read(
                    self.client, self.inventory, local_for
                )
            return self.inventory

    async def refresh_settings(self) -> MigrationSettings:
        self.settings = await self.client.cluster_options()
        self.settings_read_at = self.clock()
        return self.settings

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    def transport_refusal(self) -> tuple[str, str] | None:
        """Why no migration may start now (a condition reason and message), or None."""
        settings = self.settings
        refusal = self.policy.transport_refusal(
            ClusterMigrationType(settings.type) if settings else ClusterMigrationType.UNKNOWN,
            may_choose=self.client.can_choose_migration_type,
            hidden=settings is not None and settings.hidden,
        )
        return (refusal.reason, refusal.message) if refusal else None

    # ----- accepting VMMigrations --------------------------------------------------------

    async def accept(self, request: MigrationRequest, current: Mapping[str, Any]) -> bool:
        """Take a VMMigration that is new, queued, or was running before a restart; False
        when it is known here already."""
        now = self.clock()
        for uid in [u for u, at in self._ended.items() if now - at > ENDED_MEMORY_SECONDS]:
            del self._ended[uid]
        unwritten = self._unwritten.get(request.key)
        if unwritten is not None and unwritten[0].uid != request.uid:
            del self._unwritten[request.key]  # for an object of that name that is gone
        known = (self._queued, self._running, self._withdrawn, self._accepting, self._unwritten)
        if any(request.key in keys for keys in known) or request.uid in self._ended:
            return False
        self._accepting.add(request.key)
        try:
            self._statuses[request.key] = dict(current)
            if current.get("phase") == "Running":
                await self._resume(request, current)
            else:
                await self._submit(request)
        finally:
            self._accepting.discard(request.key)
        self._wake.set()
        return True

    async def _submit(self, request: MigrationRequest) -> None:
        inventory = await self.refresh_inventory(max_age=5.0)
        vm = inventory.vm(request.vmid)
        now = self.clock()
        if vm is None:
            await self._write_failed(
                request, "vm_not_found", f"VM {request.vmid} does not exist in cluster {self.label}"
            )
            return
        target = inventory.node(request.target)
        if target is None:
            names = ", ".join(sorted(node.name for node in inventory.nodes))
            await self._write_failed(
                request,
                "target_offline",
                f"node {request.target!r} is not in cluster {self.label} (nodes: {names})",
            )
            return
        if request.source and vm.node not in (request.source, request.target):
            await self._write_failed(
                request,
                "source_mismatch",
                f"VM {request.vmid} runs on {vm.node}, not on the expected source {request.source}",
            )
            return
        if vm.node == request.target:
            await self._write(
                request,
                vmstatus.succeeded(
                    self._statuses[request.key], now, note=f"VM {request.vmid} already on {vm.node}"
                ),
            )
            return
        job = Job(
            key=request.key,
            vmid=request.vmid,
            source=vm.node,
            target=request.target,
            priority=request.priority,
            memory_bytes=vm.used_memory if vm.running else 0,
        )
        self.engine.submit(job, now)
        self._queued[request.key] = _Queued(request, job, now, vm)
        await self._write(
            request,
            vmstatus.queued(
                self._statuses[request.key],
                vm.node,
                now,
                f"queued: VM {request.vmid} {vm.node} -> {request.target}",
            ),
        )

    async def _resume(self, request: MigrationRequest, current: Mapping[str, Any]) -> None:
        """A migration that was Running when the operator stopped: find its task, never re-POST
        one that may have reached PVE."""
        source = str(current.get("sourceNode") or "")
        recorded = current.get("upid")
        attempt = int(current.get("attemptCount") or 1)
        started = vmstatus.attempt_start_epoch(current.get("attempts") or []) or self.clock()
        inventory = await self.refresh_inventory(max_age=5.0)
        vm = inventory.vm(request.vmid)
        job = Job(request.key, request.vmid, source, request.target, request.priority)
        found = None
        if not recorded and source:
            found = await self._find_unrecorded_task(request, source, started, current)
        upid = str(recorded or found or "")
        if upid:
            self.engine.adopt_running(job, started, attempt)
            running = self._running[request.key] = _Running(request, job, upid, started, vm=vm)
            running.probe_at = self.clock()
            if found:
                await self._record_upid(running, found)
            log.info("resumed %s: tracking %s", request.key, upid)
            return
        if vm is not None and vm.node == request.target:
            await self._write(
                request,
                vmstatus.succeeded(current, self.clock(), note="found on the target after restart"),
            )
            return
        log.info("resumed %s: no task found for the recorded request; queueing again", request.key)
        taken_back = vmstatus.not_sent(current)  # the intent was written, the POST never made
        if taken_back:
            await self._write(request, taken_back)
        await self._submit(request)

    async def _find_unrecorded_task(
        self,
        request: MigrationRequest,
        source: str,
        requested_at: float,
        current: Mapping[str, Any],
    ) -> str | None:
        """A `qmigrate` of this VM on `source`, requested at/after `requested_at`, that no
        earlier attempt recorded: the task a POST created before its answer was lost."""
        since = int(requested_at) - CLOCK_SKEW_SECONDS
        return await self.client.find_migration_task(
            request.vmid, source, since, _recorded_upids(current)
        )

    def withdraw(self, key: str) -> bool:
        """Take back a queued migration before it starts, writing nothing: its owner deletes
        the VMMigration and plans the guest again. True also for one withdrawn earlier and
        not deleted yet; False if it is not queued here, e.g. already started. Synchronous,
        so no start can slip in between check and removal."""
        if key in self._queued:
            self.engine.cancel(key)
            del self._queued[key]
            self._withdrawn.add(key)
        return key in self._withdrawn

    async def cancel(self, request: MigrationRequest) -> str:
        """Deleting a VMMigration: drop it from the queue or stop its PVE task; the status
        and the Event say what the stopped task left behind."""
        now = self.clock()
        current = self._statuses.get(request.key, {})
        attention = False
        if self.withdraw(request.key):
            self._withdrawn.discard(request.key)
            message = "cancelled before it started"
        elif request.key in self._running:
            running = self._running.pop(request.key)
            notes, attention = await self._stop_task(running, "stopping")
            self.engine.finish(request.key, now, Outcome(False, "cancelled", False))
            stopped = "; ".join([f"PVE task {running.upid or '(none)'} stopped", *notes])
            message = f"cancelled; {stopped}"
        else:
            return "nothing to cancel"
        metrics.MIGRATIONS.labels(self.label, request.target, "cancelled").inc()
        await self._write(request, vmstatus.cancelled(current, now, message))
        kind = "Warning" if attention else "Normal"  # something is left for a human to do
        self.events(request.event_ref, kind, "Cancelled", message)
        return message

    async def _stop_task(self, running: _Running, what: str) -> tuple[list[str], bool]:
        """Stop a running migration's task (if it has one); say what it left behind, and
        whether any of it needs a human.

        PVE answers the DELETE once the worker is gone: SIGTERM to its process group, SIGKILL
        5 s later (pve-common `PVE/RESTEnvironment.pm` check_worker, kill_process_group), so
        its cleanup can be cut short (qemu-server `PVE/QemuMigrate.pm` phase2_cleanup,
        phase3_cleanup). Then one task list and one inventory read tell (docs/reference/
        proxmox.md#stopping-a-task): a config still locked `migrate` is unlocked when PVE
        lets us (`skiplock` is root@pam's only) and reported otherwise; a task killed by
        SIGKILL (exit status `unexpected status`, pve-common `PVE/UPID.pm` read_status) may
        have left the target's incoming QEMU running, which no API call shows.
        """
        if not running.upid:
            return [], False
        upid = parse_upid(running.upid)
        request = running.request
        try:
            await self.client.stop_task(upid.node, running.upid)
            rows = await self.client.tasks(upid.node, since=upid.starttime, vmid=request.vmid)
            vm = (await self.refresh_inventory()).vm(request.vmid)
        except PveError as error:
            log.warning("%s %s failed: %s", what, running.upid, error)
            return [f"stopping it failed ({error}): check VM {request.vmid} on its nodes"], True
        notes: list[str] = []
        attention = False
        if any(
            row.get("upid") == running.upid and row.get("status") == "unexpected status"
            for row in rows
        ):
            attention = True
            notes.append(
                f"PVE killed the task before its cleanup ended: an incoming VM {request.vmid} "
                f"may still run on {request.target} (stop its QEMU there: "
                f"kill $(cat /var/run/qemu-server/{request.vmid}.pid))"
            )
        if vm is not None and vm.lock == "migrate":
            try:
                await self.client.unlock_vm(vm.node, request.vmid)
                notes.append(f"stale 'migrate' lock of VM {request.vmid} on {vm.node} cleared")
            except PveError as error:
                attention = True
                notes.append(
                    f"VM {request.vmid} keeps lock 'migrate' on {vm.node} (clearing it failed: "
                    f"{error}); run 'qm unlock {request.vmid}' there"
                )
        if vm is not None and vm.node == request.target:
            notes.append(f"VM {request.vmid} had already moved to {vm.node}")
        return notes, attention

    # ----- the loop ------------------------------------------------------------------------

    async def run_once(self) -> None:
        """One tick: start what the engine allows, then look at running tasks."""
        now = self.clock()
        if self._queued:
            if self.settings is None or now - self.settings_read_at > OPTIONS_MAX_AGE:
                await self.refresh_settings()
            if self.transport_refusal() is None:
                for job in self.engine.poll(now):
                    queued = self._queued.pop(job.key, None)
                    if queued is None:  # cancelled between poll and here
                        self.engine.finish(job.key, now, Outcome(False, "cancelled", False))
                        continue
                    metrics.MIGRATION_QUEUE_WAIT.labels(self.label).observe(
                        now - queued.submitted_at
                    )
                    self._running[job.key] = _Running(queued.request, job, None, now, vm=queued.vm)
                    task = asyncio.create_task(self._start(self._running[job.key]))
                    self._tasks.add(task)
                    task.add_done_callback(self._start_done)
        self._announce_endings(now)
        if self._tracking_due(now):
            self._last_track = now
            await self._track()
        self._export_metrics()

    async def settle(self) -> None:
        """Wait for the starts this tick launched (library mode and tests drive ticks by hand)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def next_tick(self, now: float) -> float:
        """When the loop should look again if nothing wakes it earlier."""
        at = now + self.task_poll_seconds
        wakeup = self.engine.next_wakeup(now)
        if wakeup is not None and self.transport_refusal() is None:
            at = min(at, max(now, wakeup))
        return at

    def _tracking_due(self, now: float) -> bool:
        """Read task lists every poll while a task may end or fail soon, else every
        `IDLE_POLLS` polls: long transfers whose end is predicted need no watching meanwhile."""
        watched = [r for r in self._running.values() if r.upid or r.awaiting_task]
        since = now - self._last_track
        if not watched or since < self.task_poll_seconds:
            return False
        return since >= IDLE_POLLS * self.task_poll_seconds or any(
            self._needs_watching(r, now) for r in watched
        )

    def _needs_watching(self, running: _Running, now: float) -> bool:
        if running.upid is None:  # its task is still to be identified
            return True
        if running.probe_at is not None and now >= running.probe_at:
            return True
        # before its first log read a migration may fail any moment (most drops happen at
        # its start); after it, only near the predicted end
        return running.ending_at is None or running.ending_at - now <= self.task_poll_seconds

    def _start_done(self, task: asyncio.Task[None]) -> None:
        """A start that failed unexpectedly may have sent its request: its migrations still
        without a task are looked for in the task lists (and time out) like lost answers."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "cluster %s: starting a migration failed", self.label, exc_info=task.exception()
            )
            for running in self._running.values():
                if running.upid is None and not running.closing:
                    running.awaiting_task = True
            self._wake.set()

    async def run(self) -> None:
        """Tick until cancelled. No error ends the loop: a failed tick is logged, counted in
        `failed_ticks`/`loop_error` (the cluster's Ready condition shows it) and tried again
        after a backoff; `heartbeat` tells liveness that ticks still complete."""
        while True:
            try:
                await self.flush_unwritten()
                await self.run_once()
                self.failed_ticks, self.loop_error = 0, None
            except Exception as error:
                self.failed_ticks += 1
                self.loop_error = f"{type(error).__name__}: {error}"
                if isinstance(error, PveError):
                    log.warning("cluster %s: %s", self.label, error)
                else:
                    log.exception("cluster %s: engine tick failed", self.label)
            self.heartbeat = time.monotonic()
            now = self.clock()
            delay = max(self.next_tick(now) - now, MIN_TICK_SECONDS)
            self._wake.clear()
            if self.failed_ticks:
                backoff = ERROR_BACKOFF_SECONDS * 2 ** (self.failed_ticks - 1)
                await asyncio.sleep(max(delay, min(backoff, ERROR_BACKOFF_MAX)))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def replace_client(self, client: AsyncPveClient, auth: AuthMethod) -> None:
        """New endpoints or credentials: later calls use the new client; running work goes on."""
        old, self.client, self.auth = self.client, client, auth
        self.settings = None  # re-read: the transport rule depends on the auth method
        old.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.client.close()
        metrics.forget(proxmox_cluster=self.label)

    def _export_metrics(self) -> None:
        """Queue and per-target gauges and counters for every node the inventory lists (and
        any target the engine knows): an idle one reports 0 in flight rather than its last
        busy value, and its counters exist at 0 before their first event."""
        snapshot = self.engine.snapshot(self.clock())
        metrics.MIGRATIONS_QUEUED.labels(self.label).set(snapshot.queued)
        self._metric_targets.update(snapshot.limit_per_target)
        if self.inventory is not None:
            self._metric_targets.update(node.name for node in self.inventory.nodes)
        for target in self._metric_targets:
            limit = self.engine.concurrency_limit(target)
            metrics.TARGET_CONCURRENCY_LIMIT.labels(self.label, target).set(limit)
            metrics.count_from_zero(self.label, target)
            metrics.MIGRATIONS_IN_FLIGHT.labels(self.label, target).set(
                snapshot.running_per_target.get(target, 0)
            )

    # ----- starting ------------------------------------------------------------------------

    async def _start(self, running: _Running) -> None:
        request, job = running.request, running.job
        current = self._statuses.get(request.key, {})
        attempt = int(current.get("attemptCount") or 0) + 1
        intent = vmstatus.start_requested(current, job.source, attempt, running.started_at)
        try:
            written = await self._write(request, intent, required=True)
        except Exception as error:  # the API server failed us: nothing was sent to PVE yet
            log.warning("%s: recording the start failed (%s); queueing again", request.key, error)
            self._requeue_unsent(running)
            return
        if written is None:  # the VMMigration was deleted meanwhile
            self.engine.finish(job.key, self.clock(), Outcome(False, "cancelled", False))
            self._running.pop(job.key, None)
            return
        try:
            upid = await self._post(running)
        except PveApiError as error:  # PVE refused: no task exists
            await self._finish(running, classify_api_error(error.status, error.text, error.errors))
            return
        except (PveAuthError, ValueError, TypeError) as error:
            # Nothing started: PVE rejected the login (401 comes before any work), or the
            # client refused its arguments before sending (a bug here, e.g. `migration_type`
            # without root@pam). Waiting for a task would only delay this by
            # UNCONFIRMED_TASK_TIMEOUT; new credentials may fix the first, nothing the second.
            log.error("%s: the migration request was not sent: %s", request.key, error)
            transient = isinstance(error, PveAuthError)
            failure = Failure(Reason.API_ERROR, transient, Phase.API, str(error), False)
            await self._finish(running, failure)
            return
        except PveUnreachable as error:
            if not error.request_may_have_arrived:
                failure = Failure(Reason.API_ERROR, True, Phase.API, str(error), False)
                await self._finish(running, failure)
                return
            upid = None
        except Exception:
            log.exception("%s: the migration request failed unexpectedly", request.key)
            upid = None
        if upid:
            await self._record_upid(running, upid)
        else:  # the answer was lost: find its task before retrying
            running.awaiting_task = True
        self.events(
            request.event_ref,
            "Normal",
            "Started",
            f"VM {request.vmid}: {job.source} -> {request.target} ({upid or 'task pending'})",
        )
        self._wake.set()

    async def _post(self, running: _Running) -> str:
        """The migration request. For an HA-managed guest PVE answers a `hamigrate` task and
        the HA manager starts the `qmigrate` later (qemu-server API2/Qemu.pm migrate_vm);
        this needs only `VM.Migrate`, where the HA endpoint needs `Sys.Console` on `/`."""
        request, job = running.request, running.job
        vm = running.vm
        return await self.client.migrate(
            job.source,
            request.vmid,
            request.target,
            online=request.online and (vm is None or vm.running),
            with_local_disks=request.with_local_disks,
            bwlimit_kib=request.bandwidth_limit_kib or self.policy.bandwidth_limit_kib,
            migration_type=self.policy.type.value
            if self.client.can_choose_migration_type
            else None,
        )

    def _requeue_unsent(self, running: _Running) -> None:
        key = running.request.key
        self._running.pop(key, None)
        decision = self.engine.finish(key, self.clock(), Outcome(False, "api_error", True))
        if decision.kind == "retry":
            self._queued[key] = _Queued(running.request, running.job, self.clock(), running.vm)

    # ----- tracking ------------------------------------------------------------------------

    def _announce_endings(self, now: float) -> None:
        """Tell the engine which transfers are about to end: their `rm -f` and `qm unlock`
        logins to the target are seconds away and count against its handshake budget.

        Only a predicted end is announced; a transfer that will be looked at again first
        (`probe_at` at or before `ending_at`: its end is unknown) holds no slot meanwhile."""
        lead = self.engine.policy.end_spread_seconds
        for key, running in self._running.items():
            ending_at, probe_at = running.ending_at, running.probe_at
            if ending_at is None or now < ending_at - lead:
                continue
            if probe_at is None or probe_at > ending_at:
                self.engine.notify_ending(key, now)

    @property
    def _first_probe_delay(self) -> float:
        """Read a task's log once its tunnel is up and the transfer rate has settled."""
        return 2 * self.engine.policy.start_window_seconds

    async def _probe_transfers(self, now: float) -> None:
        """Predict transfer ends from PVE's progress lines, with a few log reads per task.

        No prediction outlives its time: a transfer predicted to end soon is read again if
        its task still runs one poll after the end phase that follows, and one whose first
        pass is over (re-sent pages past the guest's memory: the log does not tell how much
        is left) after a share of the time it has run, never sooner than the idle poll
        reads task lists anyway. Task lists are thus read every poll only near a predicted
        end."""
        poll = self.task_poll_seconds
        for running in list(self._running.values()):
            if not running.upid or running.probe_at is None or now < running.probe_at:
                continue
            node = parse_upid(running.upid).node
            lines = await self.client.task_log(node, running.upid, start=running.log_lines_seen)
            running.log_lines_seen += len(lines)
            progress = transfer_progress(lines)
            if progress is not None and progress.rate > 0:
                dirty = progress.dirty_bounds(now - running.started_at)
                self.engine.observe_rate(running.request.key, progress.rate, dirty)
            if progress is None or not (progress.rate > 0 or progress.completed):
                running.probe_at = now + self._first_probe_delay
                if running.ending_at is not None:  # an earlier prediction, not confirmed
                    running.ending_at = running.probe_at
                continue
            left = progress.seconds_left
            if left is None:  # re-sending dirtied pages: look again later, announce nothing
                look = max(IDLE_POLLS * poll, RESEND_RECHECK_SHARE * (now - running.started_at))
                running.ending_at = running.probe_at = now + look
                continue
            running.ending_at = now + left
            if progress.completed:
                running.probe_at = None  # the end phase runs; the task list shows its end
            elif left > REPROBE_MIN_SECONDS:
                running.probe_at = now + left * REPROBE_AFTER_SHARE
            else:  # still running after its end phase would have ended: read again
                running.probe_at = running.ending_at + self.engine.policy.end_window_seconds + poll

    async def _record_upid(self, running: _Running, upid: str) -> None:
        running.upid = upid
        running.probe_at = self.clock() + self._first_probe_delay
        key = running.request.key
        await self._write(
            running.request, vmstatus.started(self._statuses[key], upid, self.clock())
        )

    async def _fail_if_unconfirmed_too_long(self, running: _Running) -> None:
        """A request whose `qmigrate` never appeared is retried (or fails) as a timeout."""
        if self.clock() - running.started_at > UNCONFIRMED_TASK_TIMEOUT:
            message = f"no migration task appeared within {UNCONFIRMED_TASK_TIMEOUT:.0f} s"
            await self._finish(running, Failure(Reason.TIMEOUT, True, Phase.API, message, False))

    async def _identify_unconfirmed(
        self, unconfirmed: list[_Running], lists: Mapping[str, list[dict[str, Any]]]
    ) -> None:
        """Find, in the source's task list, the task of each request whose answer was lost:
        a `qmigrate`, or for an HA guest the `hamigrate` its POST forked."""
        for running in unconfirmed:
            since = int(running.started_at) - CLOCK_SKEW_SECONDS
            current = self._statuses.get(running.request.key, {})
            entries = lists.get(running.job.source, [])
            recorded = _recorded_upids(current)
            types = ("qmigrate", "hamigrate")
            upid = first_migration_since(entries, running.request.vmid, since, recorded, types)
            if upid:
                await self._record_upid(running, upid)
            else:
                await self._fail_if_unconfirmed_too_long(running)

    async def _track(self) -> None:
        """One task list per node that runs (or should soon run) a migration of ours."""
        unconfirmed = [r for r in self._running.values() if not r.upid and r.awaiting_task]
        tracked = {
            key: TrackedTask(r.request.vmid, r.upid, r.job.source)
            for key, r in self._running.items()
            if r.upid
        }
        starts = [int(r.started_at) - CLOCK_SKEW_SECONDS for r in unconfirmed]
        first = poll_since(tracked.values())
        since = min([*starts, *([first] if first is not None else [])])
        nodes = nodes_to_poll(tracked.values()) | {r.job.source for r in unconfirmed}
        lists: dict[str, list[dict[str, Any]]] = {}
        for node in sorted(nodes):
            lists[node] = await self.client.tasks(node, since=since)
        await self._identify_unconfirmed(unconfirmed, lists)
        result = evaluate(list(tracked.values()), lists)
        by_upid = {task.upid: key for key, task in tracked.items()}
        queued: list[_Running] = []
        for handoff in result.handoffs:
            key = by_upid[handoff.request.upid]
            running = self._running.get(key)
            if running is None:
                continue
            if handoff.child is not None:
                await self._record_upid(running, handoff.child.upid)
            else:
                queued.append(running)
        await self._judge_ha_requests(queued)
        for end in result.finished:
            key = by_upid[end.task.upid]
            running = self._running.get(key)
            if running is None:
                continue
            if end.succeeded:
                await self._finish(running, None)
                continue
            node = end.task.parsed.node
            lines = await self.client.task_log(node, end.task.upid)
            judge = classify_hamigrate if end.task.parsed.type == "hamigrate" else classify
            await self._finish(running, judge(end.exitstatus, lines, running.request.target))
        await self._probe_transfers(self.clock())
        await self._check_timeouts()

    async def _judge_ha_requests(self, queued: list[_Running]) -> None:
        """HA requests queued without a migration task yet. Past HA_DECISION_SECONDS one
        inventory read for all of them tells whether the HA manager still moves a guest
        (`hastate` `migrate`), has moved it, or dropped the request: PVE shows no task and
        logs why only to syslog, so the classifier judges from `hastate`, node and lock."""
        now = self.clock()
        due = []
        for running in queued:
            running.ha_queued_at = running.ha_queued_at or now
            if now - running.ha_queued_at > HA_DECISION_SECONDS:
                due.append(running)
        if not due:
            return
        inventory = await self.refresh_inventory(max_age=self.task_poll_seconds)
        for running in due:
            request = running.request
            vm = inventory.vm(request.vmid)
            if vm is not None and vm.node == request.target:
                await self._finish(running, None)
            elif vm is None or vm.ha_state != "migrate":
                target = inventory.node(request.target)
                online = target is not None and target.online
                lock = vm.lock if vm is not None else None
                await self._finish(running, classify_unstarted_ha(request.target, online, lock))

    async def _check_timeouts(self) -> None:
        now = self.clock()
        for running in list(self._running.values()):
            if running.upid and now - running.started_at > self.policy.task_timeout_seconds:
                await self._stop_task(running, "stopping timed-out")
                await self._finish(
                    running,
                    Failure(
                        Reason.TIMEOUT,
                        False,
                        Phase.PHASE2,
                        "task ran longer than taskTimeoutSeconds="
                        f"{self.policy.task_timeout_seconds}",
                        False,
                    ),
                )

    async def _finish(self, running: _Running, failure: Failure | None) -> None:
        """Record how an attempt ended and do what the engine decides."""
        request = running.request
        key = request.key
        if self._running.get(key) is not running or running.closing:
            return
        running.closing = True
        try:  # PVE first: if it fails, the migration keeps its slot and is judged again
            moved = failure is None or failure.vm_moved is True
            if failure is not None and failure.vm_moved is None:
                inventory = await self.refresh_inventory()
                vm = inventory.vm(request.vmid)
                moved = vm is not None and vm.node == request.target
            note = ""
            if failure is not None and moved and failure.lock == "migrate":
                note = await self._clear_stale_lock(request)
        finally:
            running.closing = False
        del self._running[key]
        now = self.clock()
        if failure is not None and failure.reason is Reason.SSH_DROPPED:
            metrics.SSH_DROPS.labels(self.label, request.target).inc()
        outcome = Outcome(
            succeeded=moved,
            reason=failure.reason.value if failure else None,
            transient=bool(failure and failure.transient),
        )
        decision = self.engine.finish(key, now, outcome)
        current = self._statuses.get(key, {})
        duration = now - running.started_at
        if decision.kind == "done":
            metrics.MIGRATIONS.labels(self.label, request.target, "succeeded").inc()
            metrics.MIGRATION_DURATION.labels(self.label, "succeeded").observe(duration)
            await self._write(request, vmstatus.succeeded(current, now, failure, note))
            self.events(
                request.event_ref,
                "Normal",
                "Succeeded",
                f"VM {request.vmid} now on {request.target} after {duration:.1f} s",
            )
            if self.inventory is not None:
                self.inventory = None  # placement changed: next reader re-reads
        elif decision.kind == "retry" and failure is not None:
            metrics.MIGRATION_RETRIES.labels(self.label, failure.reason.value).inc()
            retry_at = decision.retry_at or now
            self._queued[key] = _Queued(request, running.job, now, running.vm)
            await self._write(
                request, vmstatus.retrying(current, now, failure, retry_at, decision.attempt)
            )
            self.events(
                request.event_ref,
                "Warning",
                "Retrying",
                f"attempt {decision.attempt} failed: {failure.summary}",
            )
        else:
            metrics.MIGRATIONS.labels(self.label, request.target, "failed").inc()
            metrics.MIGRATION_DURATION.labels(self.label, "failed").observe(duration)
            reason = failure.reason.value if failure else "unknown"
            summary = failure.summary if failure else "failed"
            message = f"attempt {decision.attempt} failed: {summary}"
            await self._write(request, vmstatus.failed(current, now, reason, message, failure))
            self.events(request.event_ref, "Warning", "Failed", message)
        self._wake.set()

    async def _clear_stale_lock(self, request: MigrationRequest) -> str:
        """After a dropped final `qm unlock` the VM runs on the target still locked `migrate`."""
        try:
            await self.client.unlock_vm(request.target, request.vmid)
        except PveError as error:
            return (
                f"VM {request.vmid} moved but keeps lock 'migrate' on {request.target} "
                f"(clearing it failed: {error}); run 'qm unlock {request.vmid}' there"
            )
        return f"VM {request.vmid} moved; stale 'migrate' lock cleared"

    # ----- status writes -----------------------------------------------------------------------

    async def _write_failed(self, request: MigrationRequest, reason: str, message: str) -> None:
        current = self._statuses.get(request.key, {})
        await self._write(request, vmstatus.failed(current, self.clock(), reason, message))
        metrics.MIGRATIONS.labels(self.label, request.target, "failed").inc()
        self.events(request.event_ref, "Warning", "Failed", message)

    async def _write(
        self, request: MigrationRequest, patch: dict[str, Any], *, required: bool = False
    ) -> dict[str, Any] | None:
        """Persist a status change (with any earlier one the API server has not confirmed);
        None when the VMMigration no longer exists.

        A `required` write (the intent before a POST) raises when it fails and changes
        nothing here. Any other change is recorded here first and kept until the API server
        has it: a failed write is logged and retried by every tick (`flush_unwritten`), so
        the migration's bookkeeping goes on and nothing is lost."""
        key = request.key
        pending = {**self._unwritten.get(key, (request, {}))[1], **patch}
        if required:  # never a final status
            answer = await self._send(request, pending)
            self._statuses[key] = vmstatus.merged(self._statuses.get(key, {}), patch)
            self._unwritten.pop(key, None)
            return answer
        self._statuses[key] = vmstatus.merged(self._statuses.get(key, {}), patch)
        entry = self._unwritten[key] = (request, pending)
        return await self._write_pending(key, entry)

    async def _write_pending(
        self, key: str, entry: tuple[MigrationRequest, dict[str, Any]]
    ) -> dict[str, Any] | None:
        try:
            return await self._confirm(key, entry)
        except Exception as error:
            log.warning("%s: status write failed, kept to retry: %s", key, error)
            return {"status": self._statuses.get(key, {})}  # exists, as far as we know

    async def _confirm(
        self, key: str, entry: tuple[MigrationRequest, dict[str, Any]]
    ) -> dict[str, Any] | None:
        """Send the pending patch; once the API server has it, forget it (and a final
        status) unless a newer change was merged meanwhile."""
        answer = await self._send(*entry)
        if self._unwritten.get(key) is entry:
            del self._unwritten[key]
            if entry[1].get("phase") in FINAL_PHASES:
                self._statuses.pop(key, None)
                self._ended[entry[0].uid] = self.clock()
        return answer

    async def _send(
        self, request: MigrationRequest, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        return await self.kube.patch_status(VMMIGRATIONS, request.namespace, request.name, patch)

    async def flush_unwritten(self) -> None:
        """Write the status changes the API server refused earlier; raises while it still
        refuses (the loop backs off)."""
        for key, entry in list(self._unwritten.items()):
            if self._unwritten.get(key) is entry:
                await self._confirm(key, entry)
                log.info("%s: status written after an earlier failure", key)


def _recorded_upids(current: Mapping[str, Any]) -> set[str]:
    """UPIDs earlier attempts of a VMMigration recorded in its status."""
    return {str(a["upid"]) for a in current.get("attempts") or [] if a.get("upid")}
