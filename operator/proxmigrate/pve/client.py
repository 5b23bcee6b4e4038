"""`PveClient`: the PVE API calls the operator needs, one HTTP request each unless noted.

Synchronous on purpose (proxmoxer is); `AsyncPveClient` runs these in a thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from proxmigrate.inventory import Inventory
from proxmigrate.pve.errors import PveApiError
from proxmigrate.pve.precondition import MigrationPrecondition, parse_precondition
from proxmigrate.pve.resources import (
    MigrationSettings,
    parse_inventory,
    parse_migration_settings,
)
from proxmigrate.pve.tracker import first_migration_since
from proxmigrate.pve.transport import (
    AnswerCounter,
    Auth,
    PveTransport,
    RequestRetry,
    is_root_ticket,
)
from proxmigrate.pve.upid import is_upid

TASK_LOG_PAGE = 500  # lines per `GET .../log` request
TASK_LIST_LIMIT = 1000  # PVE lists 50 tasks unless told; a busy target has more
# UPIDs go into paths verbatim: `:`, `@` and `!` are valid path characters (RFC 3986 pchar).


class PveClient:
    """A PVE cluster reached through one or more endpoints (`host[:port]`, failover in order)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        auth: Auth,
        *,
        on_answer: AnswerCounter | None = None,
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        retry: RequestRetry | None = None,
        clock: Callable[[], float] = time.time,
        transport: PveTransport | None = None,
    ) -> None:
        self.transport = transport or PveTransport(
            endpoints,
            auth,
            on_answer=on_answer,
            verify_tls=verify_tls,
            ca_bundle=ca_bundle,
            connect_timeout=connect_timeout,
            timeout=timeout,
            retry=retry,
        )
        self._clock = clock

    @property
    def can_choose_migration_type(self) -> bool:
        """Only a root@pam ticket may send `migration_type`: qemu-server `API2/Qemu.pm`
        migrate_vm refuses it unless the user is `root@pam`, and a token's user is its token id
        (pve-manager `PVE/HTTPServer.pm` auth_handler), so other users and tokens get the
        datacenter's `migration` setting."""
        return is_root_ticket(self.transport.auth)

    def _get(self, path: str, **params: Any) -> Any:
        return self.transport.request("GET", path, params)

    def version(self) -> dict[str, Any]:
        return dict(self._get("version") or {})

    def cluster_options(self) -> MigrationSettings:
        return parse_migration_settings(self._get("cluster/options") or {})

    def inventory(self) -> Inventory:
        """Nodes and QEMU guests from a single `GET /cluster/resources`."""
        return parse_inventory(self._get("cluster/resources") or [], taken_at=self._clock())

    def ha_resources(self) -> list[dict[str, Any]]:
        return list(self._get("cluster/ha/resources") or [])

    def migrate(
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
        """Start a migration; returns its UPID (`qmigrate`, or `hamigrate` for HA guests).

        Never retried once sent: on a lost answer `PveUnreachable.request_may_have_arrived`
        is set and the caller must look for the task with `find_migration_task`.
        """
        if migration_type is not None and not self.can_choose_migration_type:
            raise ValueError(
                "migration_type needs a root@pam ticket; PVE refuses it from other users and "
                "API tokens (the datacenter `migration` option applies instead)"
            )
        params: dict[str, Any] = {"target": target, "online": int(online)}
        if with_local_disks:
            params["with-local-disks"] = 1
        if bwlimit_kib is not None:
            params["bwlimit"] = bwlimit_kib
        if migration_type is not None:
            params["migration_type"] = migration_type
        path = f"nodes/{node}/qemu/{vmid}/migrate"
        return _expect_upid(self.transport.request("POST", path, params, idempotent=False))

    def precondition(
        self, node: str, vmid: int, target: str | None = None
    ) -> MigrationPrecondition:
        """PVE's own check of a guest's local disks, devices and (without `target`: every)
        target node. Needs `VM.Migrate` on the guest, as the migration itself
        (qemu-server `API2/Qemu.pm` `migrate_vm_precondition`); a locked guest is refused."""
        return parse_precondition(self._get(f"nodes/{node}/qemu/{vmid}/migrate", target=target))

    def tasks(
        self,
        node: str,
        *,
        since: int | None = None,
        typefilter: str | None = None,
        vmid: int | None = None,
        limit: int = TASK_LIST_LIMIT,
    ) -> list[dict[str, Any]]:
        """Running and finished tasks of one node (one request serves every tracked task)."""
        params = {"source": "all", "since": since, "typefilter": typefilter, "vmid": vmid}
        params["limit"] = limit
        return list(self._get(f"nodes/{node}/tasks", **params) or [])

    def task_log(self, node: str, upid: str, start: int = 0, limit: int | None = None) -> list[str]:
        """Log lines from line `start`; all of them (one request per page) unless `limit`."""
        path = f"nodes/{node}/tasks/{upid}/log"
        if limit is not None:
            return _log_text(self._get(path, start=start, limit=limit))
        lines: list[str] = []
        while True:
            page = _log_text(self._get(path, start=start + len(lines), limit=TASK_LOG_PAGE))
            lines.extend(page)
            if len(page) < TASK_LOG_PAGE:
                return lines

    def stop_task(self, node: str, upid: str) -> None:
        """`DELETE .../tasks/{upid}`: PVE answers once the worker is gone, up to ~5 s (SIGTERM,
        SIGKILL after 5 s: pve-common `PVE/RESTEnvironment.pm` kill_process_group); a task
        already ended is no error."""
        self.transport.request("DELETE", f"nodes/{node}/tasks/{upid}", idempotent=True)

    def unlock_vm(self, node: str, vmid: int) -> None:
        """Clear a stale config lock (what `qm unlock` does).

        PVE lets only root@pam change `lock` and use `skiplock` ("only root can set 'lock'
        config"), so with a token this raises `PveApiError` and the lock must be reported.
        """
        path = f"nodes/{node}/qemu/{vmid}/config"
        self.transport.request("PUT", path, {"delete": "lock", "skiplock": 1}, idempotent=True)

    def find_migration_task(
        self, vmid: int, source: str, since: int, exclude: Collection[str] = ()
    ) -> str | None:
        """The first `qmigrate` of `vmid` on `source` started at or after `since` (epoch s),
        other than the UPIDs in `exclude`.

        Used after a restart (was the POST sent?) and after an answer was lost.
        """
        entries = self.tasks(source, since=since, typefilter="qmigrate", vmid=vmid)
        return first_migration_since(entries, vmid, since, exclude)


def _expect_upid(answer: Any) -> str:
    if not is_upid(answer):
        raise PveApiError(200, f"expected a task UPID, PVE answered {answer!r}")
    return str(answer)


def _log_text(entries: Any) -> list[str]:
    return [str(entry.get("t", "")) for entry in entries or []]
