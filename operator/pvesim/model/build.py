"""Build a `Cluster` from a YAML-shaped dict, or generate a realistic one."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from pvesim.model.access import Access
from pvesim.model.cluster import Cluster
from pvesim.model.datacenter import Datacenter
from pvesim.model.entities import VM, Disk, Node
from pvesim.model.params import GiB, MaxStartups, MiB, ModelParams, SshdParams
from pvesim.model.sshd import Sshd

SHARED_STORAGES = frozenset({"ceph"})  # the generated cluster's shared RBD pool

# Generated VM sizes (GiB) and weights: mostly small, a few large. Assumption shaped like
# typical mixed clusters; only the 1-64 GiB range is given by the issue.
_SIZES = (1, 2, 4, 8, 16, 32, 64)
_WEIGHTS = (30, 25, 20, 13, 7, 4, 1)
_TAGS = ("web", "db", "prod", "dev", "batch", "plb_ignore_vm")
_ROLES = ("web", "db", "app", "cache", "ci", "mon")
_HEADROOM = 0.45  # generated nodes are sized so VM memory fills ~45%: one node can drain


def sshd_params(params: ModelParams, max_startups: str | None) -> SshdParams:
    base = replace(params.sshd, per_source_penalties=params.pve_version >= 9)
    return replace(base, max_startups=MaxStartups.parse(max_startups)) if max_startups else base


def make_node(params: ModelParams, name: str, index: int, spec: dict[str, Any]) -> Node:
    return Node(
        name=name,
        index=index,
        maxmem=int(float(spec.get("memory_gib", 256)) * GiB),
        cpus=int(spec.get("cpus", 64)),
        sshd=Sshd(sshd_params(params, spec.get("max_startups"))),
        nic_gbit=float(spec.get("nic_gbit", params.network.nic_gbit)),
        online=bool(spec.get("online", True)),
    )


def make_vm(spec: dict[str, Any], shared: frozenset[str]) -> VM:
    vmid = int(spec["vmid"])
    maxmem = int(float(spec.get("memory_gib", 2)) * GiB)
    running = bool(spec.get("running", True))
    used = spec.get("used_gib")
    mem = int(float(used) * GiB) if used is not None else int(maxmem * 0.6)
    disks = [
        Disk(
            key=str(d.get("key", f"scsi{i}")),
            storage=str(d.get("storage", "ceph")),
            size=int(float(d.get("size_gib", 32)) * GiB),
            shared=str(d.get("storage", "ceph")) in shared,
            volname=str(d.get("volname", f"vm-{vmid}-disk-{i}")),
            cdrom=bool(d.get("cdrom", False)),
        )
        for i, d in enumerate(spec.get("disks", [{"storage": "ceph", "size_gib": 32}]))
    ]
    return VM(
        vmid=vmid,
        name=str(spec.get("name", f"vm{vmid}")),
        node=str(spec["node"]),
        maxmem=maxmem,
        mem=mem if running else 0,
        cpus=int(spec.get("cpus", 2)),
        running=running,
        template=bool(spec.get("template", False)),
        dirty_rate=float(spec.get("dirty_mib_s", 10)) * MiB,
        disks=disks,
        local_devices=[str(d) for d in spec.get("local_devices", [])],
        tags=[str(t) for t in spec.get("tags", [])],
        pool=spec.get("pool"),
        ha_state=_ha_state(spec.get("ha")),
        lock=spec.get("lock"),
    )


def _ha_state(value: Any) -> str | None:
    """YAML `ha`: true (an HA resource, `started`), false/absent, or a resources.cfg state
    such as `ignored`."""
    if value is True:
        return "started"
    return str(value) if value else None


def from_config(
    config: dict[str, Any], *, seed: int = 0, params: ModelParams | None = None
) -> Cluster:
    """The cluster YAML format (docs/pvesim.md)."""
    params = params or ModelParams(pve_version=int(config.get("pve_version", 8)))
    shared = frozenset(config.get("shared_storages", SHARED_STORAGES))
    nodes = [
        make_node(params, str(spec["name"]), i + 1, spec) for i, spec in enumerate(config["nodes"])
    ]
    vms = [make_vm(spec, shared) for spec in config.get("vms", [])]
    datacenter = Datacenter.parse(config.get("datacenter", {}))
    cluster = Cluster(nodes, vms, seed=seed, params=params, datacenter=datacenter)
    cluster.access = Access.parse(config.get("access") or {})
    return cluster


def generate(
    nodes: int, vms_per_node: int, *, seed: int = 0, params: ModelParams | None = None
) -> Cluster:
    """pve1..pveN, vmids from 100, mixed sizes, a few tags, room to drain any one node."""
    params = params or ModelParams()
    rng = random.Random(seed)
    vms: list[VM] = []
    per_node_mem: list[int] = []
    vmid = 100
    for n in range(1, nodes + 1):
        total = 0
        for _ in range(vms_per_node):
            size = rng.choices(_SIZES, _WEIGHTS)[0] * GiB
            running = rng.random() > 0.05
            disks = [
                Disk("scsi0", "ceph", rng.choice((16, 32, 64)) * GiB, True, f"vm-{vmid}-disk-0")
            ]
            if rng.random() < 0.03:
                disks.append(Disk("scsi1", "local-lvm", 8 * GiB, False, f"vm-{vmid}-disk-1"))
            vm = VM(
                vmid=vmid,
                name=f"{rng.choice(_ROLES)}-{vmid}",
                node=f"pve{n}",
                maxmem=size,
                mem=int(size * rng.uniform(0.3, 0.9)) if running else 0,
                cpus=rng.choice((1, 2, 2, 4, 8)),
                running=running,
                template=not running and rng.random() < 0.3,
                dirty_rate=rng.lognormvariate(0.0, 1.0) * 10 * MiB,  # assumption: median 10 MiB/s
                disks=disks,
                local_devices=["hostpci0"] if rng.random() < 0.01 else [],
                tags=sorted(set(rng.sample(_TAGS[:5], rng.choice((0, 0, 1, 2))))),
                pool=rng.choice((None, None, "prod", "dev")),
                ha_state="started" if rng.random() < 0.05 else None,
                cpu_load=rng.uniform(0.02, 0.6),
            )
            vms.append(vm)
            total += size
            vmid += 1
        per_node_mem.append(total)
    node_mem = max(
        64 * GiB, -(-int(max(per_node_mem, default=0) / _HEADROOM) // (64 * GiB)) * 64 * GiB
    )
    node_list = [
        Node(f"pve{n}", n, node_mem, 64, Sshd(sshd_params(params, None)), params.network.nic_gbit)
        for n in range(1, nodes + 1)
    ]
    return Cluster(node_list, vms, seed=seed, params=params)
