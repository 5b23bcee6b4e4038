"""The datacenter's migration setting is read before a batch of starts, not while the
engine holds every queued migration back (a long drain read it every 10 s for nothing)."""

from __future__ import annotations

import asyncio

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.inventory import Inventory, VMInfo
from proxmigrate.pve.resources import MigrationSettings
from proxmigrate.runtime.cluster import MigrationRequest
from tests.unit.test_runtime_cluster import FakePve, runtime


class CountingPve(FakePve):
    def __init__(self) -> None:
        super().__init__()
        self.options_reads = 0

    async def inventory(self) -> Inventory:
        known = await super().inventory()
        other = VMInfo(101, "db", "pve1", True, 4 * 2**30, 2 * 2**30)
        return Inventory(known.nodes, (*known.vms, other), taken_at=0.0)

    async def cluster_options(self) -> MigrationSettings:
        self.options_reads += 1
        return await super().cluster_options()


def test_options_are_not_read_while_nothing_may_start() -> None:
    async def scenario() -> None:
        clock = [0x6B000000 + 5.0]
        pve = CountingPve()
        rt, _ = runtime(pve, clock)
        rt.update_policy(MigrationPolicySpec.from_spec({"maxParallel": 1}))
        for index, vmid in enumerate((100, 101)):
            await rt.accept(MigrationRequest("ns", f"m{index}", f"u{index}", vmid, "pve2"), {})
        await rt.run_once()
        await rt.settle()
        assert len(pve.posts) == 1 and pve.options_reads == 1
        for _ in range(30):  # a minute with the second held back by maxParallel
            clock[0] += 2.0
            await rt.run_once()
            await rt.settle()
        assert len(pve.posts) == 1
        assert pve.options_reads == 1
        pve.finish(pve.task_rows[0]["upid"], "OK")
        for _ in range(7):  # the first ends, seen at its next look: the second may start
            clock[0] += 2.0
            await rt.run_once()
            await rt.settle()
        assert len(pve.posts) == 2
        assert pve.options_reads == 2

    asyncio.run(scenario())


class SixVmPve(CountingPve):
    async def inventory(self) -> Inventory:
        known = await super().inventory()
        more = tuple(
            VMInfo(vmid, f"vm{vmid}", "pve1", True, 2**30, 2**29) for vmid in range(102, 106)
        )
        return Inventory(known.nodes, (*known.vms, *more), taken_at=0.0)


def test_options_are_read_once_a_minute_over_batches() -> None:
    """One migration at a time, each ended 16 s after its start: every start is a batch of
    its own, and the datacenter setting is read once a minute for them, not before each
    (`OPTIONS_MAX_AGE`)."""

    async def scenario() -> None:
        clock = [0x6B000000 + 5.0]
        pve = SixVmPve()
        rt, _ = runtime(pve, clock)
        rt.update_policy(MigrationPolicySpec.from_spec({"maxParallel": 1}))
        for vmid in range(100, 106):
            await rt.accept(MigrationRequest("ns", f"m{vmid}", f"u{vmid}", vmid, "pve2"), {})
        began = clock[0]
        posted_at: dict[int, float] = {}
        while len(pve.posts) < 6 and clock[0] - began < 300:
            await rt.run_once()
            await rt.settle()
            for index, row in enumerate(pve.task_rows):
                posted_at.setdefault(index, clock[0])
                if "endtime" not in row and clock[0] - posted_at[index] >= 16:
                    pve.finish(row["upid"], "OK")
            clock[0] += 2.0
        assert len(pve.posts) == 6
        elapsed = clock[0] - began  # six starts about 20 s apart: before each, 6 reads
        assert 90 < elapsed < 180
        assert pve.options_reads <= 3  # once a minute

    asyncio.run(scenario())


def test_options_are_not_read_where_the_transport_rule_does_not_need_them() -> None:
    """With a root@pam ticket the request picks the transport, and with `allowInsecure`
    either transport is accepted: the datacenter's setting decides nothing, so a batch
    starts without reading it (with a token and no `allowInsecure`, it is read first)."""

    async def starts(root: bool, policy: dict[str, object]) -> tuple[int, int]:
        pve = CountingPve()
        pve.can_choose_migration_type = root
        rt, _ = runtime(pve, [0x6B000000 + 5.0])
        rt.update_policy(MigrationPolicySpec.from_spec(policy))
        await rt.accept(MigrationRequest("ns", "m0", "u0", 100, "pve2"), {})
        await rt.run_once()
        await rt.settle()
        return len(pve.posts), pve.options_reads

    assert asyncio.run(starts(True, {})) == (1, 0)
    assert asyncio.run(starts(False, {"allowInsecure": True})) == (1, 0)
    assert asyncio.run(starts(False, {})) == (1, 1)
