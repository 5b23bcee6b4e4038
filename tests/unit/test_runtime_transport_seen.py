"""A live migration's log names its transport: with an API token the datacenter's migration
setting picked it, so the runtime's first look at each migration confirms the setting it
holds (no re-read a minute later while the drain runs) or shows it changed (read again
before the next batch, which it then refuses)."""

from __future__ import annotations

import asyncio
from typing import Any

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.pve.resources import MigrationSettings
from proxmigrate.pve.task_log import migration_secure
from proxmigrate.runtime.cluster import ClusterRuntime, MigrationRequest
from tests.unit.test_runtime_cluster import GIB, FakePve, runtime

START = 0x6B000000 + 5.0


class DatacenterPve(FakePve):
    """Six guests on pve1; each migration's log names the transport the datacenter setting
    of the moment picks (qemu-server `src/PVE/QemuMigrate.pm` phase2: `unix` unless
    `insecure`) and the task ends `lasts` seconds after its POST."""

    def __init__(self, lasts: float, turns_insecure: bool = False) -> None:
        super().__init__()
        self.lasts = lasts
        self.turns_insecure = turns_insecure  # right after the first POST
        self.options_reads = 0
        self.posted_at: dict[str, float] = {}

    async def inventory(self) -> Inventory:
        known = await super().inventory()
        more = tuple(VMInfo(v, f"vm{v}", "pve1", True, 4 * GIB, GIB) for v in range(101, 106))
        return Inventory(known.nodes, (*known.vms, *more), taken_at=0.0)

    async def cluster_options(self) -> MigrationSettings:
        self.options_reads += 1
        return await super().cluster_options()

    async def migrate(self, node: str, vmid: int, target: str, **options: Any) -> str:
        upid = await super().migrate(node, vmid, target, **options)
        uri = "tcp:10.0.0.2:60000" if self.migration_type == "insecure" else "unix:/run/x.migrate"
        self.logs[upid] = [
            f"2026-01-01 00:00:00 starting migration of VM {vmid} to node '{target}' (10.0.0.2)",
            "2026-01-01 00:00:02 ssh tunnel ver 1",
            f"2026-01-01 00:00:03 start migrate command to {uri}",
        ]
        if self.turns_insecure:
            self.migration_type = "insecure"
        return upid

    def end_due(self, now: float) -> None:
        for row in self.task_rows:
            upid = row["upid"]
            self.posted_at.setdefault(upid, now)
            if "endtime" not in row and now - self.posted_at[upid] >= self.lasts:
                self.finish(upid, "OK")


async def one_at_a_time(pve: DatacenterPve, seconds: float) -> ClusterRuntime:
    clock = [START]
    rt, _ = runtime(pve, clock)
    rt.task_poll_seconds = 2.0
    rt.update_policy(MigrationPolicySpec.from_spec({"maxParallel": 1}))
    for vmid in range(100, 106):
        await rt.accept(MigrationRequest("ns", f"m{vmid}", f"u{vmid}", vmid, "pve2"), {})
    while clock[0] - START < seconds:
        await rt.run_once()
        await rt.settle()
        pve.end_due(clock[0])
        clock[0] += 2.0
    return rt


def test_each_migration_s_transport_confirms_the_setting_held() -> None:
    """Six migrations of 40 s one after another (about 4 minutes): the setting is read
    before the first batch only; each migration's secure transport confirms it."""
    pve = DatacenterPve(lasts=40.0)
    asyncio.run(one_at_a_time(pve, 300.0))
    assert len(pve.posts) == 6
    assert pve.options_reads == 1  # once a minute before: 3


def test_a_transport_the_setting_held_does_not_name_makes_the_next_batch_read_it() -> None:
    """The datacenter turned insecure after the first start: the second migration ran over
    `tcp`; the batch after the first look at it reads the setting again and refuses,
    rather than starting every migration of the minute the old read is trusted for."""

    pve = DatacenterPve(lasts=16.0, turns_insecure=True)
    rt = asyncio.run(one_at_a_time(pve, 58.0))  # within a minute of the first read
    assert len(pve.posts) == 2  # the first (secure), the one that showed the change
    assert pve.options_reads == 2
    assert rt.transport_refusal() is not None


def test_the_migrate_command_names_the_transport() -> None:
    """`unix` for secure, `tcp` for insecure (qemu-server `src/PVE/QemuMigrate.pm` phase2,
    `$state_uri`); unknown before the line is written."""
    line = "2026-01-01 00:00:03 start migrate command to {}"
    assert migration_secure([line.format("unix:/run/qemu-server/100.migrate")]) is True
    assert migration_secure([line.format("tcp:10.0.0.2:60000")]) is False
    assert migration_secure([line.format("tcp:[fd00::2]:60000")]) is False
    assert migration_secure(["2026-01-01 00:00:02 ssh tunnel ver 1"]) is None
