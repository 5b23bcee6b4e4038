"""The clusters the contenders drain: fixed layouts (seeded), one model seed per run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from proxmigrate.simulate.model import model_params
from proxmigrate.simulate.outcome import movable_guests
from pvesim.model import Cluster, generate
from pvesim.model.params import GiB, MaxStartups, MiB


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    nodes: int
    vms_per_node: int
    drained: tuple[str, ...]
    layout_seed: int = 1
    drained_nic_gbit: float | None = None  # None: every node has the default 10 Gbit/s
    # changes to the generated cluster (links, guests, sshd) after the seeded layout
    shape: Callable[[Cluster], None] | None = None

    def build(self, run_seed: int) -> Cluster:
        """The scenario's cluster; `run_seed` drives the model's randomness (sshd, timings)."""
        cluster = generate(
            self.nodes,
            self.vms_per_node,
            seed=self.layout_seed,
            params=model_params(),
        )
        cluster.rng.seed(run_seed)
        if self.drained_nic_gbit is not None:
            for node in self.drained:
                cluster.nodes[node].nic_gbit = self.drained_nic_gbit
        if self.shape is not None:
            self.shape(cluster)
        return cluster

    def movable(self, cluster: Cluster) -> dict[int, int]:
        """Guests that should leave (vmid -> memory in use)."""
        return movable_guests(cluster, self.drained)


ONE_NODE = Scenario(
    "drain-1of4",
    "Drain 1 of 4 nodes: 64 VMs (1-64 GiB mix), 10 Gbit/s, sshd 10:30:100",
    nodes=4,
    vms_per_node=64,
    drained=("pve1",),
)
TWO_NODES = Scenario(
    "drain-2of8",
    "Drain 2 of 8 nodes at once: 200 VMs in the cluster (50 leave), 10 Gbit/s",
    nodes=8,
    vms_per_node=25,
    drained=("pve1", "pve2"),
)
FAST_SOURCE = Scenario(
    "drain-25g-source",
    "Drain 1 of 4 nodes whose NIC is 25 Gbit/s (targets 10 Gbit/s): 64 VMs",
    nodes=4,
    vms_per_node=64,
    drained=("pve1",),
    drained_nic_gbit=25.0,
)


def _links(gbit: float) -> Callable[[Cluster], None]:
    def shape(cluster: Cluster) -> None:
        for node in cluster.nodes.values():
            node.nic_gbit = gbit

    return shape


def _write_heavy(cluster: Cluster) -> None:
    """Three of pve1's guests become busy databases: 32 GiB, 28 GiB in use, dirtying
    200 MiB/s, above the share of a 10 Gbit/s link 8 streams get (about 140 MiB/s)."""
    guests = sorted((vm for vm in cluster.vms.values() if vm.node == "pve1" and vm.running),
                    key=lambda vm: vm.vmid)  # fmt: skip
    for vm in guests[:: len(guests) // 3][:3]:
        vm.maxmem, vm.mem, vm.dirty_rate = 32 * GiB, 28 * GiB, 200.0 * MiB


def _slower_fuller_targets(cluster: Cluster) -> None:
    """pve1 on 25 Gbit/s; pve3 and pve4 on 5 Gbit/s, pve4 with half its memory gone."""
    for name in ("pve3", "pve4"):
        cluster.nodes[name].nic_gbit = 5.0
    cluster.nodes["pve4"].maxmem //= 2


def _max_startups(text: str) -> Callable[[Cluster], None]:
    def shape(cluster: Cluster) -> None:
        for node in cluster.nodes.values():
            node.sshd.params = replace(node.sshd.params, max_startups=MaxStartups.parse(text))

    return shape


SLOW_LINKS = Scenario(
    "drain-1g",
    "Drain 1 of 4 nodes on 1 Gbit/s links: 16 VMs per node (1-64 GiB mix)",
    nodes=4,
    vms_per_node=16,
    drained=("pve1",),
    shape=_links(1.0),
)
WRITE_HEAVY = Scenario(
    "drain-write-heavy",
    "drain-1of4 with 3 busy 32 GiB databases (200 MiB/s dirtied) among the small guests",
    nodes=4,
    vms_per_node=64,
    drained=("pve1",),
    shape=_write_heavy,
)
FAST_INTO_SLOW = Scenario(
    "drain-25g-into-5g",
    "25 Gbit/s source into 10, 5 and 5 Gbit/s targets, one of them half full: 64 VMs",
    nodes=4,
    vms_per_node=64,
    drained=("pve1",),
    drained_nic_gbit=25.0,
    shape=_slower_fuller_targets,
)
TWO_DRAINS_60 = Scenario(
    "drain-2of8-ms60",
    "drain-2of8 under sshd MaxStartups 10:30:60 (the technote's setting)",
    nodes=8,
    vms_per_node=25,
    drained=("pve1", "pve2"),
    shape=_max_startups("10:30:60"),
)
