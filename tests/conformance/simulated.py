"""The corpus situations played in pvesim, in-process, through its API router.

A situation is a small cluster (pve1..pve3, VM 100 on pve1) plus what happens to it: an sshd
that drops the n-th connection to pve2, a lock taken after the API call, a migration
network, an HA guest. Requests go through `pvesim.api.router` as the HTTPS server sends
them (permissions, PVE's schema, then the model), as root@pam or pvesim's root token.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pvesim.api import router
from pvesim.auth import TOKEN_ID
from pvesim.model import ROOT, Cluster, from_config

SOURCE, TARGET, VMID = "pve1", "pve2", 100
CROWD = 1000  # first VMID of the guests that migrate to pve2 alongside VM 100
_VM = {"vmid": VMID, "node": SOURCE, "memory_gib": 2, "used_gib": 2, "dirty_mib_s": 0}
USERS = {"root": ROOT, "token": TOKEN_ID}  # pvesim's token: root's, not privilege-separated


def cluster(spec: Mapping[str, Any]) -> Cluster:
    """Three nodes; `vm`/`disks`/`local_devices`/`ha` shape VM 100 (or `vms` lists guests of
    pve1), `crowd` adds that many small guests on pve3 (VMIDs from 1000), `max_startups`
    sets every sshd's and `sshd` overrides their model parameters; `datacenter` and `access`
    are the cluster YAML's (docs/pvesim.md)."""
    vm = _VM | dict(spec.get("vm", {}))
    for key in ("disks", "local_devices", "ha"):
        if key in spec:
            vm[key] = spec[key]
    guests = [_VM | dict(guest) for guest in spec["vms"]] if "vms" in spec else [vm]
    guests += [_VM | {"vmid": CROWD + i, "node": "pve3"} for i in range(spec.get("crowd", 0))]
    node: dict[str, Any] = {"memory_gib": 256}
    if "max_startups" in spec:
        node["max_startups"] = spec["max_startups"]
    config = {
        "pve_version": int(spec.get("pve_version", 8)),
        "nodes": [node | {"name": f"pve{i}"} for i in (1, 2, 3)],
        "vms": guests,
        "datacenter": dict(spec.get("datacenter", {})),
        "access": dict(spec.get("access", {})),
    }
    sim = from_config(config, seed=1)
    for each in sim.nodes.values():
        each.sshd.params = replace(each.sshd.params, **spec.get("sshd", {}))
    return sim


def api(sim: Cluster, method: str, path: str, user: str = ROOT, **params: Any) -> Any:
    raw = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in params.items()}
    return router.dispatch(sim, method, path, user, raw)


def drop_nth_connection(sim: Cluster, node: str, nth: int) -> None:
    """The node's sshd drops exactly its `nth` new connection (as MaxStartups would)."""
    sshd = sim.nodes[node].sshd
    admit = sshd.admit
    seen = 0

    def dropping(source: str, now: float, rng: random.Random) -> bool:
        nonlocal seen
        seen += 1
        if seen == nth:
            sshd.drops += 1
            return False
        return admit(source, now, rng)

    sshd.admit = dropping  # type: ignore[method-assign]


def start_migration(sim: Cluster, spec: Mapping[str, Any], user: str = ROOT) -> str:
    """`POST /nodes/pve1/qemu/100/migrate` to pve2 (online when the VM runs)."""
    if "drop" in spec:
        drop_nth_connection(sim, TARGET, int(spec["drop"]))
    running = sim.vms[VMID].running
    path = f"nodes/{SOURCE}/qemu/{VMID}/migrate"
    upid = str(api(sim, "POST", path, user, target=TARGET, online=running))
    if "lock_after_request" in spec:
        sim.set_lock(VMID, str(spec["lock_after_request"]))
    return upid


def migration_task(spec: Mapping[str, Any]) -> tuple[Cluster, str]:
    """Run the situation to its end; the UPID of the `qmigrate` that did the work (for an HA
    guest the LRM's, unless `task` asks for the `hamigrate` request; with `while_migrating`
    the second of two migrations of the VM; with `pick` the first whose log has that text)."""
    sim = cluster(spec)
    if spec.get("while_migrating"):  # an earlier migration of the VM holds its lock
        start_migration(sim, {})
    upid = start_migration(sim, spec)
    for vmid in range(CROWD, CROWD + int(spec.get("crowd", 0))):
        api(sim, "POST", f"nodes/pve3/qemu/{vmid}/migrate", target=TARGET, online=True)
    sim.run_until_idle()
    if spec.get("ha") and spec.get("task") != "hamigrate":
        (upid,) = [u for u, t in sim.tasks.items() if t.upid.type == "qmigrate"]
    if "pick" in spec:  # the first migration whose log shows what the case is about
        upid = next(
            u
            for u, t in sorted(sim.tasks.items(), key=lambda item: item[1].starttime)
            if t.upid.type == "qmigrate" and any(spec["pick"] in line for line in t.lines)
        )
    return sim, upid


def task_log(sim: Cluster, upid: str) -> list[str]:
    """`GET .../tasks/{upid}/log` with `limit=0`, which reads to the end."""
    node = upid.split(":")[1]
    rows = api(sim, "GET", f"nodes/{node}/tasks/{upid}/log", limit=0)
    return [str(row["t"]) for row in rows]


def task_answer(situation: str, user: str, endpoint: str) -> dict[str, Any]:
    """The task-list row (`endpoint` list, source=all) or status answer of a migration by
    `user` (root or token) in `situation` (running, succeeded, bin-true-dropped,
    qm-start-dropped)."""
    drops = {"bin-true-dropped": 1, "qm-start-dropped": 2}
    spec: dict[str, Any] = {"vm": {"memory_gib": 64, "used_gib": 60}}
    if situation in drops:
        spec["drop"] = drops[situation]
    sim = cluster(spec)
    who = USERS[user]
    upid = start_migration(sim, spec, who)
    if situation == "running":
        sim.advance_to(sim.now + 10.0)
        assert sim.tasks[upid].running
    else:
        sim.run_until_idle()
    if endpoint == "status":
        return dict(api(sim, "GET", f"nodes/{SOURCE}/tasks/{upid}/status", who))
    rows = api(sim, "GET", f"nodes/{SOURCE}/tasks", who, source="all")
    (row,) = [dict(r) for r in rows if r["upid"] == upid]
    return row
