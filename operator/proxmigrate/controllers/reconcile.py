"""The loop NodeDrains and VMPlacements share: reconcile, then sleep until woken.

A pass reads the object kopf's watch keeps fresh and everything else from the caches
(controllers/cache.py); it then sleeps until something it depends on changes
(controllers/wakeups.py), or RESYNC_SECONDS at the latest. A pass that fails is retried
with exponential backoff, and the error is in the object's status (condition Reconciled,
False) until a pass succeeds again, as Kubernetes controllers do.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import kopf

from proxmigrate.api.conditions import set_condition
from proxmigrate.api.constants import VMMIGRATIONS
from proxmigrate.api.refs import raw_cluster_name
from proxmigrate.controllers.cache import Body, Caches, snapshot
from proxmigrate.controllers.children import is_deleting, label_value
from proxmigrate.controllers.registry import Registry, Waker
from proxmigrate.kube import Kube, shared_kube

log = logging.getLogger(__name__)
RESYNC_SECONDS = 600.0  # a pass without a wake-up, should a watch have lost an event
DEBOUNCE_SECONDS = 0.05  # wake-ups this close together make one pass
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 120.0
# kopf cancels a daemon that does not end at once when it stops it (the object deleted,
# the operator leaving) unless given this grace (`cancellation_backoff`): a pass under way
# (a drain creating its VMMigrations, writing its status) finishes, then the loop sees
# `stopped` and ends. Cancelled mid-pass, it was "Daemon 'node_drain' is cancelled" at
# most drain deletions, and half a pass done.
STOP_GRACE_SECONDS = 5.0
RECONCILED = "Reconciled"  # condition type present (False) only while passes fail
UNSEEN_CHILD_SECONDS = 60.0  # a created VMMigration the watch has not shown is trusted this long


class Reconciler:
    """One pass over one object; every decision is re-derived from the object and the
    caches, so a restarted operator picks up where the last pass left off."""

    plural: ClassVar[str]

    def __init__(
        self, kube: Kube, body: Mapping[str, Any], caches: Caches, registry: Registry, waker: Waker
    ) -> None:
        self.kube = kube
        self.body = body
        self.caches = caches
        self.registry = registry
        self.waker = waker
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.generation: int | None = body["metadata"].get("generation")
        self.status: Mapping[str, Any] = body.get("status") or {}
        self.written: Mapping[str, Any] | None = None  # the object as the last status write left it
        self.requeue_after: float | None = None  # a pass this soon even without a wake-up

    async def run(self) -> None:
        raise NotImplementedError

    def children(self, label_key: str) -> list[dict[str, Any]]:
        """This object's VMMigrations: those in the cache, and those its passes created
        that the watch has not delivered yet (as created: no status, phase Pending), so
        that no pass takes a child it just made for missing."""
        cached = self.caches.children(self.namespace, label_key, self.name)
        seen = {child["metadata"]["name"] for child in cached}
        created = self.waker.created
        for name, (_, at) in list(created.items()):
            if name in seen or time.monotonic() - at > UNSEEN_CHILD_SECONDS:
                del created[name]
        return cached + [manifest for manifest, _ in created.values()]

    async def create_child(self, manifest: dict[str, Any]) -> None:
        """Create a VMMigration (ApiException 409 when one of that name exists)."""
        await self.kube.create(VMMIGRATIONS, self.namespace, manifest)
        self.waker.created[manifest["metadata"]["name"]] = (manifest, time.monotonic())

    async def write_status(self, status: Mapping[str, Any]) -> None:
        written = await self.kube.patch_status(self.plural, self.namespace, self.name, dict(status))
        if written is not None:
            self.written = written


def _version(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:  # opaque to clients in principle; etcd's revisions in practice
        return 0


def newest(watched: Body, written: Mapping[str, Any] | None) -> Body:
    """The watched object, or what our own last write answered when the watch has not
    delivered that write yet (a pass never works from a status older than its own)."""
    if written is not None and _version(written) > _version(watched):
        return snapshot(written)
    return watched


async def reconcile_until_stopped(
    kind: type[Reconciler],
    body: kopf.Body,
    caches: Caches,
    registry: Registry,
    stopped: kopf.DaemonStopped,
) -> None:
    """Run `kind` over the object whenever woken, until it is deleted or kopf stops us."""
    kube = shared_kube()
    key = (kind.plural, body.metadata["namespace"], label_value(body.metadata["name"]))
    waker = registry.waker(key)
    written: Mapping[str, Any] | None = None
    failures = 0
    try:
        while not stopped:
            current = newest(snapshot(body), written)
            if is_deleting(current):
                return
            waker.cluster = raw_cluster_name(current.get("spec"))
            reconciler = kind(kube, current, caches, registry, waker)
            delay = RESYNC_SECONDS
            try:
                await reconciler.run()
                if failures:
                    await _clear_error(reconciler)
                failures = 0
                delay = min(delay, reconciler.requeue_after or delay)
            except Exception as error:  # the API server, PVE, a bug: the next pass starts over
                delay = min(BACKOFF_FIRST_SECONDS * 2**failures, BACKOFF_MAX_SECONDS)
                failures += 1
                log.warning(
                    "%s %s/%s: pass failed, again in %.0f s: %s",
                    kind.__name__,
                    reconciler.namespace,
                    reconciler.name,
                    delay,
                    error,
                    exc_info=not isinstance(error, OSError),
                )
                await _report_error(reconciler, f"{type(error).__name__}: {error}", delay)
            written = reconciler.written or written
            if await waker.sleep(delay, stopped) and not stopped:
                await asyncio.sleep(DEBOUNCE_SECONDS)
    finally:
        registry.wakers.pop(key, None)


def _conditions(reconciler: Reconciler) -> list[dict[str, Any]]:
    current = reconciler.written or reconciler.body
    return list((current.get("status") or {}).get("conditions") or [])


async def _report_error(reconciler: Reconciler, message: str, delay: float) -> None:
    now = datetime.datetime.now(datetime.UTC)
    conditions = set_condition(
        _conditions(reconciler),
        RECONCILED,
        False,
        "ReconcileFailed",
        f"{message} (retrying in {delay:.0f} s)",
        reconciler.generation,
        now,
    )
    try:
        await reconciler.write_status({"conditions": conditions})
    except Exception as error:  # the API server may be what fails
        log.warning("%s/%s: cannot report the error: %s", reconciler.plural, reconciler.name, error)


async def _clear_error(reconciler: Reconciler) -> None:
    conditions = _conditions(reconciler)
    if any(c.get("type") == RECONCILED for c in conditions):
        kept = [c for c in conditions if c.get("type") != RECONCILED]
        await reconciler.write_status({"conditions": kept})
