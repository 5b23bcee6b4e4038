"""The one inventory path: `ClusterRuntime.refresh_inventory` over pvesim's model (in process,
through the operator's own PVE client), with local disks and devices from PVE's precondition
check for the guests about to be planned, kept per guest."""

from __future__ import annotations

from typing import Any

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.api.enums import AuthMethod
from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.pve.errors import PveApiError
from proxmigrate.pve.local_resources import MAX_AGE, RETRY_SECONDS, LocalResources
from proxmigrate.pve.precondition import parse_precondition
from proxmigrate.runtime.cluster import ClusterRuntime
from proxmigrate.simulate.model import cluster_from_config
from proxmigrate.simulate.model_client import ModelClient
from proxmigrate.simulate.status_log import StatusLog
from pvesim.model import Cluster

CHECK = "GET /nodes/{node}/qemu/{vmid}/migrate"
RESOURCES = "GET /cluster/resources"
LOCAL = [{"storage": "ceph"}, {"storage": "local-lvm"}]

CONFIG: dict[str, Any] = {
    "nodes": [{"name": "a"}, {"name": "b"}],
    "vms": [
        {"vmid": 100, "node": "a"},
        {"vmid": 101, "node": "a", "disks": LOCAL},
        {"vmid": 102, "node": "a", "local_devices": ["hostpci0"]},
        {"vmid": 103, "node": "b", "disks": LOCAL},
    ],
}


def runtime_over_model() -> tuple[ClusterRuntime, ModelClient, Cluster]:
    cluster = cluster_from_config(CONFIG, seed=1)
    client = ModelClient(cluster, clock=lambda: cluster.now)
    runtime = ClusterRuntime(
        "ns",
        "lab",
        client,
        MigrationPolicySpec(),
        AuthMethod.TOKEN,
        StatusLog(),
        clock=lambda: cluster.now,
    )
    return runtime, client, cluster


def on(node: str) -> Any:
    return lambda vm: vm.node == node


async def test_guests_about_to_be_planned_get_pves_verdict_and_no_others() -> None:
    runtime, client, _ = runtime_over_model()
    inventory = await runtime.refresh_inventory(local_for=on("a"))
    vm = inventory.vm
    assert vm(101).local_disks == ("local-lvm:vm-101-disk-1",)
    assert vm(102).local_devices == ("hostpci0",)
    assert vm(100).local_disks == () and vm(100).local_devices == ()
    assert vm(103).local_disks == ()  # on b: not asked
    assert client.requests[CHECK] == 3 and client.requests[RESOURCES] == 1


async def test_answers_are_kept_until_the_guest_moves_or_they_age() -> None:
    runtime, client, cluster = runtime_over_model()
    await runtime.refresh_inventory(local_for=on("a"))
    cluster.advance_to(cluster.now + 60)
    again = await runtime.refresh_inventory(local_for=on("a"))
    cluster.advance_to(cluster.now + 1)
    plain = await runtime.refresh_inventory()  # a reader that plans nothing
    assert client.requests[CHECK] == 3 and client.requests[RESOURCES] == 3
    for inventory in (again, plain):
        assert inventory.vm(101).local_disks == ("local-lvm:vm-101-disk-1",)
    cluster.move_by_hand(101, "b")
    cluster.advance_to(cluster.now + 1)
    moved = await runtime.refresh_inventory(local_for=on("b"))
    assert client.requests[CHECK] == 5  # 101 again (it moved) and 103
    assert moved.vm(101).local_disks == ("local-lvm:vm-101-disk-1",)
    cluster.advance_to(cluster.now + MAX_AGE)
    await runtime.refresh_inventory(local_for=on("a"))
    assert client.requests[CHECK] == 7  # 100 and 102, aged


async def test_a_locked_guest_is_not_asked_until_the_inventory_shows_it_unlocked() -> None:
    runtime, client, cluster = runtime_over_model()
    cluster.set_lock(101, "backup")  # PVE's check_lock would refuse the precondition check
    locked = await runtime.refresh_inventory(local_for=on("a"))
    assert locked.vm(101).local_disks == ()
    assert client.requests[CHECK] == 2  # 100 and 102
    cluster.set_lock(101, None)
    cluster.advance_to(cluster.now + 1)
    unlocked = await runtime.refresh_inventory(local_for=on("a"))
    assert client.requests[CHECK] == 3
    assert unlocked.vm(101).local_disks == ("local-lvm:vm-101-disk-1",)


async def test_a_guest_migrating_past_the_answers_age_is_not_asked_and_keeps_its_answer() -> None:
    """A drain's passes ask for its node's guests all along; one migrating (lock `migrate`)
    once its answer aged was asked every RETRY_SECONDS, refused each time, its disks lost."""
    runtime, client, cluster = runtime_over_model()
    await runtime.refresh_inventory(local_for=on("a"))
    cluster.set_lock(101, "migrate")
    for _ in range(4):
        cluster.advance_to(cluster.now + MAX_AGE / 2)
        passing = await runtime.refresh_inventory(local_for=on("a"))
        assert passing.vm(101).local_disks == ("local-lvm:vm-101-disk-1",)
    assert client.requests[CHECK] == 3 + 2 * 2  # 100 and 102 once more each MAX_AGE


async def test_a_refused_check_is_asked_again_after_the_retry_interval() -> None:
    nodes = (NodeInfo("a", True, 64 << 30, 0, 16), NodeInfo("b", True, 64 << 30, 0, 16))
    pve = LockedMeanwhilePve()
    local = LocalResources()
    for at, asked in ((0.0, 1), (RETRY_SECONDS / 2, 1), (RETRY_SECONDS, 2)):
        inventory = Inventory(nodes, (VMInfo(100, "vm100", "a", True, 1 << 30),), taken_at=at)
        read = await local.read(pve, inventory, lambda vm: True)  # type: ignore[arg-type]
        assert pve.asked == asked and read.vm(100).local_disks == ()  # type: ignore[union-attr]


class LockedMeanwhilePve:
    """A guest locked after the inventory was read: PVE refuses its check."""

    asked = 0

    async def precondition(self, node: str, vmid: int) -> Any:
        self.asked += 1
        raise PveApiError(500, "VM is locked (backup)")


class RefusingPve:
    """A PVE 9 answer for a guest whose disk is on a storage only pve2 has (`nodes` set)."""

    async def precondition(self, node: str, vmid: int) -> Any:
        return parse_precondition(
            {
                "running": 1,
                "allowed_nodes": ["pve2"],
                "not_allowed_nodes": {"pve2": {}, "pve3": {"unavailable_storages": ["fast"]}},
                "local_disks": [],
                "local_resources": [],
            }
        )


async def test_targets_pve_refuses_are_carried_with_the_reason() -> None:
    nodes = tuple(NodeInfo(name, True, 64 << 30, 0, 16) for name in ("pve1", "pve2", "pve3"))
    inventory = Inventory(nodes, (VMInfo(100, "vm100", "pve1", True, 1 << 30),), taken_at=5.0)
    read = await LocalResources().read(RefusingPve(), inventory, lambda vm: True)  # type: ignore[arg-type]
    guest = read.vm(100)
    assert guest is not None and guest.refused_targets == (("pve3", "storage fast unavailable"),)
    assert guest.target_refusal("pve2") is None
