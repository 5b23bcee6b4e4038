"""The cluster as the core sees it: plain, immutable values built by the PVE adapter.

The planner and the engine take these and nothing else, so they stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)  # slots: an inventory holds thousands
class NodeInfo:
    """One PVE node, from `GET /cluster/resources` (type `node`)."""

    name: str
    online: bool
    max_memory: int  # bytes (`maxmem`)
    used_memory: int  # bytes (`mem`)
    max_cpu: int  # logical CPUs (`maxcpu`)
    cpu_load: float = 0.0  # 0..1 share of max_cpu in use (`cpu`)


@dataclass(frozen=True, slots=True)  # 56 B less per guest than with a __dict__
class VMInfo:
    """One QEMU guest, from `GET /cluster/resources` (type `qemu`)."""

    vmid: int
    name: str
    node: str
    running: bool
    max_memory: int  # bytes (`maxmem`): what the VM may use on its target
    used_memory: int = 0  # bytes (`mem`): what a live migration must copy, at least
    cpus: int = 1  # `maxcpu`
    template: bool = False
    tags: frozenset[str] = frozenset()
    pool: str | None = None
    ha_state: str | None = None  # `hastate`: the HA manager's state, None for no HA resource
    lock: str | None = None  # config lock (`backup`, `migrate`, ...)
    # From PVE's precondition check (pve/local_resources.py), for guests about to be planned:
    local_disks: tuple[str, ...] = ()  # volumes on node-local storage a migration copies
    local_devices: tuple[str, ...] = ()  # what PVE refuses to migrate, e.g. `hostpci0`
    refused_targets: tuple[tuple[str, str], ...] = ()  # (node, why): storage, mapping, HA

    def target_refusal(self, node: str) -> str | None:
        """Why PVE refuses `node` as this guest's target, or None."""
        return dict(self.refused_targets).get(node)

    @property
    def ha_managed(self) -> bool:
        """As pve-ha-manager HA/Config.pm vm_is_ha_managed: an `ignored` resource is not."""
        return self.ha_state not in (None, "ignored")


@dataclass(frozen=True)
class Inventory:
    """A consistent snapshot of nodes and guests, taken at `taken_at` (epoch seconds)."""

    nodes: tuple[NodeInfo, ...]
    vms: tuple[VMInfo, ...]
    taken_at: float = 0.0
    _node_index: dict[str, NodeInfo] = field(default_factory=dict, compare=False, repr=False)
    _vm_index: dict[int, VMInfo] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._node_index.update((n.name, n) for n in self.nodes)
        self._vm_index.update((v.vmid, v) for v in self.vms)

    def node(self, name: str) -> NodeInfo | None:
        return self._node_index.get(name)

    def vm(self, vmid: int) -> VMInfo | None:
        return self._vm_index.get(vmid)

    def vms_on(self, node: str) -> list[VMInfo]:
        return [v for v in self.vms if v.node == node]
