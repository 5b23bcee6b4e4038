"""One ProxmoxCluster at run time: its PVE client, engine, inventory and migration records.

The kopf handlers only translate events into calls on this object. It holds one record per
VMMigration (runtime/attempt.py) and runs the loop that asks the engine who may start
(runtime/starting.py), follows the tasks in batches (runtime/tracking.py) and records how
each attempt ended (runtime/outcomes.py); admission (runtime/admission.py) takes
VMMigrations in and gives them back. Every status change is written to the API server
before it is acted on (runtime/journal.py), so a restarted operator resumes instead of
repeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from proxmigrate import metrics
from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.api.enums import AuthMethod, ClusterMigrationType
from proxmigrate.engine import MigrationEngine
from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.errors import PveError
from proxmigrate.pve.local_resources import LocalResources
from proxmigrate.pve.resources import MigrationSettings
from proxmigrate.runtime import admission, outcomes, starting, tracking
from proxmigrate.runtime.attempt import Attempts, MigrationRequest
from proxmigrate.runtime.journal import Journal, StatusWriter
from proxmigrate.runtime.node_clock import NodeClocks

__all__ = ["ClusterRuntime", "EventSink", "MigrationRequest", "StatusWriter"]

log = logging.getLogger(__name__)

# Re-read the datacenter migration setting before a batch if older: a change to it takes
# effect within a minute (issue 13: before every batch it was 0.2-0.75 requests per VM).
# A live migration's log that shows the transport it names renews it, one that shows the
# other transport has it read again first (runtime/log_look.py `_observe_transport`).
OPTIONS_MAX_AGE = 60.0
MIN_TICK_SECONDS = 0.02  # the loop never spins faster than this
# A tick that failed is tried again after this, doubling per failure up to ERROR_BACKOFF_MAX.
ERROR_BACKOFF_SECONDS = 1.0
ERROR_BACKOFF_MAX = 10.0

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
    attempts: Attempts = field(default_factory=Attempts)
    node_clocks: NodeClocks = field(default_factory=NodeClocks)  # runtime/node_clock.py
    # the loop's health: when it last completed a tick (monotonic), why the last tick failed
    heartbeat: float = field(default_factory=time.monotonic)
    loop_error: str | None = None
    failed_ticks: int = 0
    last_track: float = 0.0  # when task lists were last read
    closed: bool = False  # its ProxmoxCluster's daemon ended: no PVE call is made any more
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _inventory_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    metric_targets: set[str] = field(default_factory=set)  # targets with exported gauges
    # an engine built elsewhere (library mode: seeded, or a policy the spec cannot express)
    engine_override: InitVar[MigrationEngine | None] = None

    def __post_init__(self, engine_override: MigrationEngine | None) -> None:
        self.engine = engine_override or MigrationEngine(self.policy.to_engine_policy())

    @property
    def journal(self) -> Journal:
        """Status writes of this cluster's VMMigrations (runtime/journal.py)."""
        return Journal(self.kube, self.attempts, self.clock)

    # ----- configuration and inventory -------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    def update_policy(self, policy: MigrationPolicySpec) -> None:
        self.policy = policy
        self.engine.update_policy(policy.to_engine_policy())
        self.wake()

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

    def _settings_due(self, now: float) -> bool:
        """The datacenter's migration setting is read before a batch if the transport rule
        depends on it (not with a root@pam ticket or `allowInsecure`) and it is unknown or
        older than OPTIONS_MAX_AGE."""
        needed = self.policy.needs_datacenter_setting(
            may_choose=self.client.can_choose_migration_type
        )
        stale = self.settings is None or now - self.settings_read_at > OPTIONS_MAX_AGE
        return needed and stale

    def transport_refusal(self) -> tuple[str, str] | None:
        """Why no migration may start now (a condition reason and message), or None."""
        settings = self.settings
        refusal = self.policy.transport_refusal(
            ClusterMigrationType(settings.type) if settings else ClusterMigrationType.UNKNOWN,
            may_choose=self.client.can_choose_migration_type,
            hidden=settings is not None and settings.hidden,
        )
        return (refusal.reason, refusal.message) if refusal else None

    async def replace_client(self, client: AsyncPveClient, auth: AuthMethod) -> None:
        """New endpoints or credentials: later calls use the new client; running work goes on."""
        old, self.client, self.auth = self.client, client, auth
        self.settings = None  # re-read: the transport rule depends on the auth method
        old.close()

    # ----- VMMigrations in and out (runtime/admission.py) -------------------------------

    async def accept(self, request: MigrationRequest, current: Mapping[str, Any]) -> bool:
        """Take a VMMigration that is new, queued, or was running before a restart; False
        when it is known here already."""
        return await admission.accept(self, request, current)

    def withdraw(self, key: str) -> bool:
        """Take back a queued migration before it starts, writing nothing (see
        `admission.withdraw`)."""
        return admission.withdraw(self, key)

    async def cancel(self, request: MigrationRequest) -> str:
        """Deleting a VMMigration: drop it from the queue or stop its PVE task. A closed
        runtime (its ProxmoxCluster deleted with it) has nothing left to cancel."""
        if self.closed:
            return f"nothing to cancel: ProxmoxCluster {self.label} is disconnected"
        return await admission.cancel(self, request)

    # ----- the loop ------------------------------------------------------------------------

    def wake(self) -> None:
        """Something changed: tick now rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> None:
        """One tick: start what the engine allows, then look at running tasks."""
        now = self.clock()
        wakeup = self.engine.next_wakeup(now) if self.attempts.any_queued else None
        if wakeup is not None and wakeup <= now:  # a batch may start: its transport rule
            if self._settings_due(now):
                await self.refresh_settings()
            if self.transport_refusal() is None:
                for attempt in starting.due(self, now):
                    task = asyncio.create_task(starting.start(self, attempt))
                    self._tasks.add(task)
                    task.add_done_callback(self._start_done)
        tracking.announce_endings(self, now)
        if tracking.due(self, now):
            self.last_track = now
            await tracking.track(self)
        outcomes.export_metrics(self)

    def _start_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            starting.failed_unexpectedly(self, task.exception())

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

    async def run(self) -> None:
        """Tick until cancelled or closed. No error ends the loop: a failed tick is logged,
        counted in `failed_ticks`/`loop_error` (the cluster's Ready condition shows it) and
        tried again after a backoff; `heartbeat` tells liveness that ticks still complete."""
        while not self.closed:
            try:
                await self.journal.flush()
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

    async def close(self) -> None:
        self.closed = True
        self._wake.set()  # the loop ends even if its cancellation is lost (wait_for, 3.11)
        for task in list(self._tasks):
            task.cancel()
        self.client.close()
        metrics.forget(proxmox_cluster=self.label)
