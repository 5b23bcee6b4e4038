"""The clusters the contenders drain: fixed layouts (seeded), one model seed per run."""

from __future__ import annotations

from dataclasses import dataclass

from proxmigrate.simulate.model import model_params
from proxmigrate.simulate.outcome import movable_guests
from pvesim.model import Cluster, generate


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    nodes: int
    vms_per_node: int
    drained: tuple[str, ...]
    layout_seed: int = 1
    drained_nic_gbit: float | None = None  # None: every node has the default 10 Gbit/s

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
