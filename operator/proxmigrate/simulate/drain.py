"""A drain in library mode: the operator's planner and runtime drive pvesim's model on
virtual time.

`LibraryDrain` plans as the NodeDrain controller does, then hands one `MigrationRequest` per
planned move (priority from plan order, as the controller's VMMigrations carry) to a real
`proxmigrate.runtime.cluster.ClusterRuntime` and ticks it by hand: `run_once`, `settle`, then
advance the model to `next_tick`. The runtime talks to the model through the operator's own
PVE client (`ModelClient`) and writes statuses to an in-memory `StatusLog`, so what runs is
the product's loop, engine, tracker, end prediction and classifier, not a copy of them.

Differences from the operator, on purpose: API calls take no virtual time (a real request
takes tens of milliseconds, so its loop wakes a little later after each start), and status
writes to the Kubernetes API cost nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.api.enums import AuthMethod
from proxmigrate.engine import EnginePolicy, MigrationEngine, link_payload
from proxmigrate.planning import DrainPlan, DrainRequest, PlannedMove, plan_drains
from proxmigrate.runtime.cluster import MIN_TICK_SECONDS, ClusterRuntime, MigrationRequest
from proxmigrate.runtime.drain_progress import migration_priority
from proxmigrate.simulate.inventory import drained_inventory
from proxmigrate.simulate.model_client import ModelClient
from proxmigrate.simulate.status_log import StatusLog
from pvesim.model import Cluster

NAMESPACE = "simulate"


@dataclass(frozen=True)
class DrainOptions:
    # The runtime's `--task-poll-seconds` default: how often it may read task lists, and the
    # longest sleep of its loop.
    task_poll_seconds: float = 2.0
    local_disks: str = "migrate"
    stopped_vms: str = "migrate"
    deadline_seconds: float = 12 * 3600.0  # virtual; a drain still running then is cut off
    # The model's link speeds declared as a ProxmoxCluster's `nodeLinks` declares them: to
    # the plan and to the engine alike, as the operator hands them on. False: neither knows
    # them (the operator's default settings; the engine learns the links from rates).
    declare_links: bool = True


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
    observed_end: float  # when the loop saw every migration final (virtual epoch seconds)
    plans: tuple[DrainPlan, ...]
    succeeded: int
    failed: dict[int, str]  # vmid -> reason of the last attempt
    retries: int
    api_requests: Counter[str]  # by route, as pvesim's server counts them
    inventory_requests: int  # of them, what the planning's inventory read took
    cpu_seconds: float  # spent in proxmigrate's code (planner, runtime, engine, client)
    cut_off: bool  # the deadline passed before every migration ended

    @property
    def planned(self) -> int:
        return sum(len(plan.moves) for plan in self.plans)

    @property
    def total_api_requests(self) -> int:
        return sum(self.api_requests.values())


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
    seed: int = 0  # the engine's retry jitter
    client: ModelClient = field(init=False)
    _cpu: _CpuMeter = field(default_factory=_CpuMeter)

    def __post_init__(self) -> None:
        self.client = ModelClient(self.cluster, clock=self._now)

    def _now(self) -> float:
        return self.cluster.now

    async def plan(self, runtime: ClusterRuntime) -> tuple[DrainPlan, ...]:
        """One plan per node, planned together (`plan_drains`: each sees the previous plans'
        moves in flight, as a NodeDrain sees the other drains' moves), from the inventory
        the NodeDrain controller reads (`drained_inventory`), with the links declared
        (`DrainOptions.declare_links`)."""
        with self._cpu.measure():
            inventory = await drained_inventory(runtime, self.nodes)
            links = self._declared_links()
            requests = [
                DrainRequest(
                    node=node,
                    cordoned=frozenset(self.nodes),
                    local_disks=self.options.local_disks,  # type: ignore[arg-type]
                    stopped_vms=self.options.stopped_vms,  # type: ignore[arg-type]
                    link_gbps=links,
                )
                for node in self.nodes
            ]
            return plan_drains(inventory, requests)

    def run(self, progress: Callable[[Progress], None] | None = None) -> DrainResult:
        return asyncio.run(self._run(progress))

    async def _run(self, progress: Callable[[Progress], None] | None) -> DrainResult:
        started_at = self.cluster.now
        log = StatusLog()
        runtime = self._runtime(log)
        plans = await self.plan(runtime)
        inventory_requests = sum(self.client.requests.values())  # the run's first requests
        requests = [_request(node, move) for node, move in _interleaved(plans)]
        names = [request.name for request in requests]
        for request in requests:
            await self._ours(runtime.accept(request, {}))
        now = started_at
        deadline = started_at + self.options.deadline_seconds
        while not log.all_final(names) and now < deadline:
            await self._ours(runtime.run_once())
            await self._ours(runtime.settle())
            with self._cpu.measure():
                now = max(runtime.next_tick(now), now + MIN_TICK_SECONDS)
            self.cluster.advance_to(now)
            if progress is not None:
                progress(
                    Progress(
                        now - started_at,
                        log.count("Succeeded"),
                        log.count("Failed"),
                        log.count("Running"),
                        len(names),
                    )
                )
        await runtime.close()
        self.cluster.run_until_idle()
        by_name = {request.name: request.vmid for request in requests}
        return DrainResult(
            started_at=started_at,
            observed_end=now,
            plans=plans,
            succeeded=log.count("Succeeded"),
            failed={
                by_name[name]: str(status.get("reason") or "unknown")
                for name, status in log.statuses.items()
                if status.get("phase") == "Failed"
            },
            retries=sum(log.requeued.values()),
            api_requests=self.client.requests,
            inventory_requests=inventory_requests,
            cpu_seconds=self._cpu.seconds - self.client.model_cpu_seconds,
            cut_off=not log.all_final(names),
        )

    def _runtime(self, log: StatusLog) -> ClusterRuntime:
        """The operator's runtime over the model, with an API token as the operator uses.

        The engine is given `policy` itself (seeded, the declared links added), not one
        rebuilt from a `MigrationPolicySpec`: what-if policies may set fields the CRD does not
        expose. The spec still supplies the transport rule, `bwlimit` and the task timeout
        (defaults)."""
        return ClusterRuntime(
            NAMESPACE,
            "model",
            self.client,
            MigrationPolicySpec(),
            AuthMethod.TOKEN,
            log,
            clock=self._now,
            task_poll_seconds=self.options.task_poll_seconds,
            engine_override=MigrationEngine(self._engine_policy(), random.Random(self.seed)),
        )

    def _declared_links(self) -> dict[str, float]:
        """Gbit/s by node, as `nodeLinks` would declare them; empty unless declared."""
        if not self.options.declare_links:
            return {}
        return {name: node.nic_gbit for name, node in self.cluster.nodes.items()}

    def _engine_policy(self) -> EnginePolicy:
        """`policy` with the declared links added, as the operator's `nodeLinks` reach the
        engine (`MigrationPolicySpec.to_engine_policy`); a capacity `policy` declares wins."""
        declared = {node: link_payload(gbit) for node, gbit in self._declared_links().items()}
        declared.update(self.policy.node_link_capacity)
        return replace(self.policy, node_link_capacity=tuple(sorted(declared.items())))

    async def _ours(self, step: Awaitable[object]) -> None:
        """Run a step of the runtime, counting its CPU time as proxmigrate's."""
        with self._cpu.measure():
            await step


def _request(node: str, move: PlannedMove) -> MigrationRequest:
    """The VMMigration the NodeDrain controller would create for `move` of `node`'s plan."""
    name = f"drain-{node}-{move.vmid}"
    return MigrationRequest(
        namespace=NAMESPACE,
        name=name,
        uid=name,
        vmid=move.vmid,
        target=move.target,
        source=move.source,
        online=True,  # the runtime migrates stopped guests offline
        with_local_disks=move.with_local_disks,
        priority=migration_priority(move.order + 1),
    )


def _interleaved(plans: Iterable[DrainPlan]) -> list[tuple[str, PlannedMove]]:
    """Plans' moves round-robin, each plan in its own order (two drains created together)."""
    lanes = [[(plan.node, move) for move in plan.moves] for plan in plans]
    merged: list[tuple[str, PlannedMove]] = []
    for index in range(max((len(lane) for lane in lanes), default=0)):
        merged.extend(lane[index] for lane in lanes if index < len(lane))
    return merged
