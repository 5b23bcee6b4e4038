"""A deleted ProxmoxCluster keeps its connection for the cancellations deleted with it.

`kubectl delete -f dir/`, a GitOps prune or a namespace deletion delete a ProxmoxCluster and
its running VMMigrations in one go, the cluster first as often as not. Each VMMigration's
delete handler stops its PVE task through the cluster's runtime (controllers/migrations.py);
had the cluster's daemon closed that runtime at once, the tasks would go on unobserved. So
the daemon of a deleted cluster stops starting migrations and keeps the runtime open while
it follows running ones: until none runs, or no cancellation is under way and none began for
CANCELS_SETTLE_SECONDS (the deletions of one request arrive within it), at most
CANCELS_MAX_SECONDS. Migrations still running then are left to PVE, with a Warning Event
that says so on the cluster and on each VMMigration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from proxmigrate.api.events import EventReason
from proxmigrate.runtime.attempt import Attempt

log = logging.getLogger(__name__)
# kubectl sends the deletes of one `delete -f` a round trip apart; the namespace controller
# deletes a namespace's kinds one after the other, well within this.
CANCELS_SETTLE_SECONDS = 2.0
# A cancellation is a task stop (PVE answers once the worker is gone: SIGTERM, SIGKILL 5 s
# later, pve-common PVE/RESTEnvironment.pm check_worker), a task list, an inventory read
# and maybe an unlock (runtime/stopping.py), each within the PVE client's timeout.
CANCELS_MAX_SECONDS = 30.0
_AFTERWARDS: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)


class Cancels:
    """The VMMigration cancellations of one ProxmoxCluster under way, and when the last one
    began or ended (controllers/migrations.py notes each)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = float("-inf")
        self._changed = asyncio.Event()

    @contextlib.contextmanager
    def cancelling(self) -> Iterator[None]:
        self._note(+1)
        try:
            yield
        finally:
            self._note(-1)

    def _note(self, change: int) -> None:
        self.in_flight += change
        self.last = time.monotonic()
        self._changed.set()

    async def changed(self, seconds: float) -> None:
        """Wait for a cancellation to begin or end, or `seconds`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(seconds, 0.0))
        self._changed.clear()


async def let_cancels_finish(
    running: Callable[[], list[Attempt]], cancels: Cancels
) -> list[Attempt]:
    """Wait while `running()` (the runtime's running attempts) is not empty and their
    cancellations may still come or are under way (see the module docstring); what still
    runs after."""
    begun = time.monotonic()
    deadline = begun + CANCELS_MAX_SECONDS
    while running() and (now := time.monotonic()) < deadline:
        quiet_at = max(begun, cancels.last) + CANCELS_SETTLE_SECONDS
        if not cancels.in_flight and now >= quiet_at:
            break
        await cancels.changed((deadline if cancels.in_flight else quiet_at) - now)
    return running()


def report_left_running(
    left: list[Attempt],
    label: str,
    cluster_ref: dict[str, Any],
    post: Callable[[dict[str, Any], str, str, str], None],
) -> str:
    """What the deleted cluster's status says; a Warning on it and on each VMMigration whose
    PVE task goes on unfollowed."""
    if not left:
        return "deleted: the running migrations deleted with it were cancelled first"
    tasks = ", ".join(
        f"{a.request.name} (VM {a.request.vmid}, {a.upid or 'no task'})" for a in left
    )
    message = (
        f"deleted while {len(left)} migration(s) ran that were not deleted with it: their "
        f"PVE tasks go on, no longer followed: {tasks}"
    )
    log.warning("ProxmoxCluster %s %s", label, message)
    post(cluster_ref, "Warning", EventReason.MIGRATIONS_LEFT_RUNNING, message)
    for attempt in left:
        post(
            attempt.request.event_ref,
            "Warning",
            EventReason.MIGRATIONS_LEFT_RUNNING,
            f"ProxmoxCluster {label} deleted: PVE task {attempt.upid or '(not known yet)'} "
            f"goes on, no longer followed (a ProxmoxCluster of that name adopts it again)",
        )
    return message


def after_this_task(work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` once the current task (kopf's daemon) has ended."""

    def spawn(_: object) -> None:
        task = asyncio.ensure_future(work())
        _AFTERWARDS.add(task)
        task.add_done_callback(_AFTERWARDS.discard)

    current = asyncio.current_task()
    assert current is not None, "called from a task"
    current.add_done_callback(spawn)
