"""What this replica keeps in memory, held in kopf's `memo` (`memo.registry`): the live
ClusterRuntime of every ProxmoxCluster it manages, and a wake-up for every NodeDrain and
VMPlacement reconciler.

Reconcilers sleep until something they depend on changes (controllers/wakeups.py sets
their wakers from watch events and inventory syncs), not on a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from proxmigrate.controllers.cluster_deletion import Cancels
from proxmigrate.runtime.cluster import ClusterRuntime


class Stoppable(Protocol):
    """kopf's `stopped` flag of a daemon: true once kopf stops it; `wait()` until then."""

    def __bool__(self) -> bool: ...

    def wait(self) -> Awaitable[object]: ...


async def first_of(awaitables: Sequence[Awaitable[object]], seconds: float) -> None:
    """Wait until one of `awaitables` is done or `seconds` passed; the rest are cancelled."""
    waits = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


# A new NodeDrain plans once no other has appeared in its namespace for this long, so that
# the drains of one `kubectl apply -f` honour each other's cordons: kubectl creates them one
# after the other, 5-16 ms apart on a local API server (measured, client- and server-side
# apply), one or two round trips apart on a remote one.
DRAINS_SETTLE_SECONDS = 0.2
WakerKey = tuple[str, str, str]  # (plural, namespace, name as a label value)
# What reconcilers read of an inventory: nodes' online state, each guest's placement facts
Fingerprint = tuple[frozenset[tuple[str, bool]], dict[int, tuple[Any, ...]]]


class Waker:
    """Wakes one reconciler. Wake-ups while it works are not lost: the event stays set."""

    def __init__(self, cluster: str | None = None) -> None:
        self.cluster = cluster  # the ProxmoxCluster its object names, as of its last pass
        self.seen: object = None  # a fingerprint of what others read of its object
        # VMMigrations its passes created, by name: (manifest, time.monotonic() of creation)
        self.created: dict[str, tuple[dict[str, Any], float]] = {}
        self.vmids: frozenset[int] | None = None  # the guests its pass reads; None: any
        self.nodes: frozenset[str] | None = None  # the nodes whose cordon it reads; None: any
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def sleep(self, seconds: float, stopped: Stoppable | None = None) -> bool:
        """Wait for a wake-up, kopf's `stopped` flag (its daemon is to end: it ends now, not
        when the sleep would) or `seconds`; True when woken."""
        waits = [self._event.wait(), *([stopped.wait()] if stopped is not None else [])]
        await first_of(waits, seconds)
        woken = self._event.is_set()
        self._event.clear()
        return woken


class Registry:
    def __init__(self) -> None:
        self.runtimes: dict[tuple[str, str], ClusterRuntime] = {}
        self.wakers: dict[WakerKey, Waker] = {}
        self.cluster_generations: dict[tuple[str, str], int | None] = {}
        self.cordons: dict[tuple[str, str], frozenset[str]] = {}  # (ns, cluster) -> nodes
        self.marks: dict[WakerKey, object] = {}  # the spec generation each object last had
        self.inventories: dict[tuple[str, str], Fingerprint] = {}  # as of the last PVE sync
        self.drain_seen: dict[str, float] = {}  # namespace -> when a new NodeDrain last appeared
        self.cancels: dict[tuple[str, str], Cancels] = {}  # (ns, cluster) -> those under way

    async def drains_settled(self, namespace: str) -> None:
        """Wait until no new NodeDrain has appeared in `namespace` for DRAINS_SETTLE_SECONDS
        (controllers/wakeups.py notes each as its first watch event arrives)."""
        while (left := self.drain_seen.get(namespace, 0.0) + DRAINS_SETTLE_SECONDS) > (
            now := time.monotonic()
        ):
            await asyncio.sleep(left - now)

    def runtime_for(self, namespace: str, cluster: str) -> ClusterRuntime | None:
        return self.runtimes.get((namespace, cluster))

    def cancels_of(self, namespace: str, cluster: str) -> Cancels:
        """The VMMigration cancellations of a ProxmoxCluster (controllers/cluster_deletion.py)."""
        return self.cancels.setdefault((namespace, cluster), Cancels())

    def waker(self, key: WakerKey) -> Waker:
        return self.wakers.setdefault(key, Waker())

    def wake(self, key: WakerKey) -> None:
        waker = self.wakers.get(key)
        if waker is not None:
            waker.wake()

    def wake_cluster(
        self,
        namespace: str,
        cluster: str,
        plurals: frozenset[str],
        vmids: frozenset[int] | None = None,
        but: WakerKey | None = None,
        nodes: frozenset[str] | None = None,
    ) -> None:
        """Wake every reconciler of `plurals` whose object names `cluster` (and, given
        `vmids` or `nodes`, reads one of those guests or nodes, or any), `but` one."""
        for key, waker in list(self.wakers.items()):
            plural, ns, _ = key
            if ns != namespace or plural not in plurals or waker.cluster != cluster:
                continue
            if key == but:
                continue
            if nodes is not None and waker.nodes is not None and not waker.nodes & nodes:
                continue
            if vmids is None or waker.vmids is None or waker.vmids & vmids:
                waker.wake()


def registry_of(memo: Any) -> Registry:
    """The Registry in kopf's memo (runner.py puts it there)."""
    registry = getattr(memo, "registry", None)
    if not isinstance(registry, Registry):
        raise RuntimeError("kopf's memo has no Registry: start the operator with run_operator")
    return registry
