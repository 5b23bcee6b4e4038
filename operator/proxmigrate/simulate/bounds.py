"""The lower bound of a drain: bytes that must cross a link, over that link's capacity.

Every running guest's memory in use leaves its node once at least (re-dirtied pages only add),
so a drain of one node cannot end before `bytes on it / its egress capacity`; drains of
several nodes are also bounded by the sum of their bytes over the targets' total ingress.
With few streams the per-stream cap binds first: a secure migration runs through one
ssh/sshd pair, so one core's cipher speed caps it (1 GiB/s in the model,
docs/reference/proxmox.md#figures-and-measurements); `bwlimit` caps each stream too.
Fixed per-migration costs (`qm start`, tunnel set-up, end phase: 4-7 s each) are left out,
so the bound is not reachable exactly: the link idles for a few seconds before the first
stream and after the last one.

The dirty-aware bound (`dirty=True`) is stricter: QEMU's pre-copy sends a guest's memory
about `1 / (1 - dirty/rate)` times (each pass re-sends what the guest dirtied during the
previous one; docs/reference/proxmox.md#ram-transfer), and no schedule can give a stream
more than its best rate (the stream cap, its node's egress, the fastest target's ingress).
Counting every guest at that best rate gives the least bytes any drain must send. A guest
dirtying at least that fast cannot converge at all: it only ends by PVE doubling its
downtime limit, so its pause has no floor below its memory over that rate (`stuck`).

The plan's bound (`plan_lower_bound`) is the same once it is fixed where each guest goes:
every target's incoming bytes over its ingress, every source's outgoing bytes over its
egress, each guest's re-sent memory at the best rate of its own pair of links. Both other
bounds let bytes go wherever a link is free; a plan that gives a slow target more than its
link carries in that time ends later whatever the engine does, so the gap between the two
is the plan's share of a drain's distance from the bound, the rest the engine's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from pvesim.model import Cluster
from pvesim.model.entities import VM

GB = 1e9


@dataclass(frozen=True)
class LowerBound:
    bytes: int
    seconds: float
    bottleneck: str  # which capacity binds, for people
    stuck: tuple[int, ...] = ()  # guests dirtying faster than their best stream (dirty=True)


def stream_cap(cluster: Cluster) -> float:
    """Bytes/s one migration stream can reach at most in this cluster."""
    network = cluster.params.network
    cap = network.qemu_default_max_bandwidth
    if cluster.datacenter.bwlimit_migration_kib:
        cap = min(cap, cluster.datacenter.bwlimit_migration_kib * 1024.0)
    if cluster.datacenter.migration_type == "secure":
        cap = min(cap, network.secure_stream_cap)
    return cap


def link_capacity(cluster: Cluster, node: str) -> float:
    """TCP payload bytes/s of a node's NIC, one direction."""
    return cluster.nodes[node].nic_gbit * 1e9 / 8 * cluster.params.network.link_efficiency


def bytes_to_move(cluster: Cluster, node: str) -> int:
    """Memory in use of the running guests that can leave `node` (local devices pin a guest)."""
    return sum(vm.mem for vm in _leaving(cluster, node))


def _leaving(cluster: Cluster, node: str) -> list[VM]:
    return [
        vm for vm in cluster.vms.values() if vm.node == node and vm.running and not vm.local_devices
    ]


def best_rate(cluster: Cluster, node: str, drained: Collection[str]) -> float:
    """The fastest a stream leaving `node` can ever run: the stream cap, the node's egress,
    the fastest other node's ingress."""
    ingress = max(
        (link_capacity(cluster, name) for name in cluster.nodes if name not in drained),
        default=0.0,
    )
    return min(stream_cap(cluster), link_capacity(cluster, node), ingress)


def drain_lower_bound(
    cluster: Cluster, drained: Collection[str], parallel: int | None = None, dirty: bool = False
) -> LowerBound:
    """Seconds a drain of `drained` needs at least with `parallel` migrations at once
    (None: unlimited); `dirty` counts the memory each guest must re-send at its best rate."""
    candidates: list[tuple[float, str]] = []
    total = 0.0
    stuck: list[int] = []
    for node in sorted(drained):
        moving = 0.0
        rate = best_rate(cluster, node, drained)
        for vm in _leaving(cluster, node):
            moving += _sent(vm, rate, dirty, stuck)
        total += moving
        egress = link_capacity(cluster, node)
        candidates.append((moving / egress, f"{node} egress {egress / GB:.3f} GB/s"))
    ingress = sum(link_capacity(cluster, name) for name in cluster.nodes if name not in drained)
    if ingress > 0:
        candidates.append((total / ingress, f"targets' ingress {ingress / GB:.3f} GB/s"))
    return _bound(cluster, total, parallel, candidates, stuck)


def plan_lower_bound(
    cluster: Cluster,
    moves: Iterable[tuple[int, str, str]],
    parallel: int | None = None,
    dirty: bool = False,
) -> LowerBound:
    """Seconds the `moves` (vmid, source, target) need at least with `parallel` migrations at
    once: each node's bytes out over its egress and in over its ingress; `dirty` counts the
    memory each guest must re-send at the best rate of its source and target. Stopped
    guests and guests with local devices send no memory."""
    out: defaultdict[str, float] = defaultdict(float)
    into: defaultdict[str, float] = defaultdict(float)
    stuck: list[int] = []
    cap = stream_cap(cluster)
    for vmid, source, target in moves:
        vm = cluster.vms[vmid]
        if not vm.running or vm.local_devices:
            continue
        rate = min(cap, link_capacity(cluster, source), link_capacity(cluster, target))
        sent = _sent(vm, rate, dirty, stuck)
        out[source] += sent
        into[target] += sent
    candidates = [
        (
            sent / link_capacity(cluster, node),
            f"{node} {way} {link_capacity(cluster, node) / GB:.3f} GB/s",
        )
        for way, sums in (("egress", out), ("ingress", into))
        for node, sent in sorted(sums.items())
    ]
    return _bound(cluster, sum(out.values()), parallel, candidates, stuck)


def _sent(vm: VM, rate: float, dirty: bool, stuck: list[int]) -> float:
    """Bytes `vm`'s migration sends at least at `rate`; `dirty` adds the pages pre-copy must
    re-send, and a guest dirtying at least that fast joins `stuck` at its memory."""
    if dirty and vm.dirty_rate < rate:
        return vm.mem / (1.0 - vm.dirty_rate / rate)
    if dirty:
        stuck.append(vm.vmid)
    return float(vm.mem)


def _bound(
    cluster: Cluster,
    total: float,
    parallel: int | None,
    candidates: list[tuple[float, str]],
    stuck: list[int],
) -> LowerBound:
    """The binding one of the link `candidates`, and of `parallel` streams at the stream cap."""
    if parallel is not None:
        per_stream = stream_cap(cluster)
        candidates.append(
            (total / (parallel * per_stream), f"{parallel} stream(s) x {per_stream / GB:.3f} GB/s")
        )
    seconds, bottleneck = max(candidates, default=(0.0, "nothing to move"))
    return LowerBound(int(total), seconds, bottleneck, tuple(sorted(stuck)))
