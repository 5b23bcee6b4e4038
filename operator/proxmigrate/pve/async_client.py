"""`AsyncPveClient`: PveClient's calls on a bounded thread pool, so the event loop never blocks.

The pool size bounds how many requests one cluster gets at once from this operator.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from proxmigrate.inventory import Inventory
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.errors import PveUnreachable
from proxmigrate.pve.precondition import MigrationPrecondition
from proxmigrate.pve.resources import MigrationSettings

_T = TypeVar("_T")


class AsyncPveClient:
    """Same methods as `PveClient`, awaited; they raise the same `PveError`s."""

    def __init__(self, client: PveClient, *, max_workers: int = 4) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.client = client
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pve-api")
        self.closed = False

    async def _run(self, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self.closed:  # the pool would raise RuntimeError, which no caller expects
            raise PveUnreachable("not sent: this cluster's connection is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args, **kwargs))

    def close(self) -> None:
        """Stop the pool: calls already made (running or queued) finish, each within the
        transport's timeouts; later ones raise PveUnreachable. Queued calls are not dropped:
        their callers (a drain's pass, a kopf handler) would get a CancelledError they did
        not ask for, which ends a kopf daemon for good."""
        self.closed = True
        self._executor.shutdown(wait=False)

    @property
    def can_choose_migration_type(self) -> bool:
        return self.client.can_choose_migration_type

    async def __aenter__(self) -> AsyncPveClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def version(self) -> dict[str, Any]:
        return await self._run(self.client.version)

    async def cluster_options(self) -> MigrationSettings:
        return await self._run(self.client.cluster_options)

    async def inventory(self) -> Inventory:
        return await self._run(self.client.inventory)

    async def migrate(
        self,
        node: str,
        vmid: int,
        target: str,
        *,
        online: bool = True,
        with_local_disks: bool = False,
        bwlimit_kib: int | None = None,
        migration_type: str | None = None,
    ) -> str:
        return await self._run(
            self.client.migrate,
            node,
            vmid,
            target,
            online=online,
            with_local_disks=with_local_disks,
            bwlimit_kib=bwlimit_kib,
            migration_type=migration_type,
        )

    async def precondition(
        self, node: str, vmid: int, target: str | None = None
    ) -> MigrationPrecondition:
        return await self._run(self.client.precondition, node, vmid, target)

    async def tasks(
        self,
        node: str,
        *,
        since: int | None = None,
        typefilter: str | None = None,
        vmid: int | None = None,
    ) -> list[dict[str, Any]]:
        return await self._run(
            self.client.tasks, node, since=since, typefilter=typefilter, vmid=vmid
        )

    async def task_log(
        self, node: str, upid: str, start: int = 0, limit: int | None = None
    ) -> list[str]:
        return await self._run(self.client.task_log, node, upid, start, limit)

    async def stop_task(self, node: str, upid: str) -> None:
        await self._run(self.client.stop_task, node, upid)

    async def unlock_vm(self, node: str, vmid: int) -> None:
        await self._run(self.client.unlock_vm, node, vmid)

    async def find_migration_task(
        self, vmid: int, source: str, since: int, exclude: Collection[str] = ()
    ) -> str | None:
        return await self._run(self.client.find_migration_task, vmid, source, since, exclude)
