"""Event-driven reconcilers: who is woken by what, and how a failing pass backs off.

The watch events are fed to the handlers as kopf would (its indexes as plain mappings of
key -> list of values); nothing here talks to an API server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from proxmigrate.api.constants import NODEDRAINS, VMPLACEMENTS
from proxmigrate.controllers import reconcile, wakeups
from proxmigrate.controllers.registry import Registry, Waker
from proxmigrate.inventory import Inventory, NodeInfo, VMInfo

GIB = 1 << 30


def woken(waker: Waker) -> bool:
    return asyncio.run(waker.sleep(0))


def registered(registry: Registry, plural: str, name: str, cluster: str = "lab") -> Waker:
    waker = registry.waker((plural, "ns", name))
    waker.cluster = cluster
    return waker


def drain(name: str, node: str, *, generation: int = 1, vms: list[Any] | None = None) -> Any:
    return kopf.Body(
        {
            "metadata": {"namespace": "ns", "name": name, "generation": generation},
            "spec": {"clusterRef": {"name": "lab"}, "nodeName": node},
            "status": {"vms": vms or []},
        }
    )


def drain_event(registry: Registry, body: Any, drains: list[Any], type: str = "MODIFIED") -> None:
    wakeups.drain_changed(
        type=type,
        namespace="ns",
        name=body["metadata"]["name"],
        body=body,
        memo=kopf.Memo(registry=registry),
        drains_index={"ns": [dict(d) for d in drains]},
        placements_index={},
        clusters_index={},
        children_index={},
    )


def test_a_drain_is_not_woken_by_its_own_status_but_by_its_spec() -> None:
    registry = Registry()
    own = registered(registry, NODEDRAINS, "d1")
    placement = registered(registry, VMPLACEMENTS, "p1")
    body = drain("d1", "pve1")
    drain_event(registry, body, [body], type="ADDED")
    assert woken(own) and woken(placement)  # a new cordon: placements must avoid pve1
    progressed = drain("d1", "pve1", vms=[{"vmid": 100, "to": "pve2", "phase": "Migrated"}])
    drain_event(registry, progressed, [progressed])
    assert not woken(own) and not woken(placement)
    edited = drain("d1", "pve1", generation=2)
    drain_event(registry, edited, [edited])
    assert woken(own) and not woken(placement)


def test_moves_under_way_wake_the_other_drains_of_the_cluster_only() -> None:
    registry = Registry()
    first, second = drain("d1", "pve1"), drain("d2", "pve2")
    drain_event(registry, first, [first, second], type="ADDED")
    other = registered(registry, NODEDRAINS, "d2")
    elsewhere = registered(registry, NODEDRAINS, "d9", cluster="other")
    placement = registered(registry, VMPLACEMENTS, "p1")
    registered(registry, NODEDRAINS, "d1")
    moving = drain("d1", "pve1", vms=[{"to": "pve3", "phase": "Queued", "memoryBytes": GIB}])
    drain_event(registry, moving, [moving, second])
    assert woken(other) and not woken(elsewhere) and not woken(placement)
    drain_event(registry, moving, [moving, second])  # the same load again: nobody
    assert not woken(other)


def returning(phase: str, return_phase: str) -> Any:
    """d1 of pve1 with `maintenanceDone`: its guest 100 goes home from pve3."""
    entry = {"vmid": 100, "from": "pve1", "to": "pve3", "phase": "Migrated", "memoryBytes": GIB}
    body = drain("d1", "pve1", vms=[{**entry, "returnPhase": return_phase}])
    body["status"]["phase"] = phase
    return body


def test_a_return_under_way_wakes_the_other_drains_of_the_cluster() -> None:
    registry = Registry()
    other = drain("d2", "pve2")
    registered(registry, NODEDRAINS, "d1")
    waiting = registered(registry, NODEDRAINS, "d2")
    drain_event(registry, returning("Returning", "Pending"), [other], type="ADDED")
    woken(waiting)  # by the new cordon
    for return_phase in ("Queued", "Migrating", "Returned"):  # its load on pve1 changes
        drain_event(registry, returning("Returning", return_phase), [other])
        assert woken(waiting), return_phase


def test_a_new_drain_of_a_returning_node_is_woken_when_the_return_has_ended() -> None:
    """The returning drain owns its node until Returned (drain_requests.owning_drain): the
    new drain of that node waits Blocked, woken when that phase is written (before: by the
    600 s resync)."""
    registry = Registry()
    new = drain("d2", "pve1")
    ended = returning("Returning", "Returned")
    registered(registry, NODEDRAINS, "d1")
    blocked = registered(registry, NODEDRAINS, "d2")
    drain_event(registry, ended, [ended, new], type="ADDED")
    drain_event(registry, ended, [ended, new])
    woken(blocked)  # by the new cordon, then its first look at d1
    drain_event(registry, ended, [ended, new])
    assert not woken(blocked)  # nothing changed
    done = returning("Returned", "Returned")
    drain_event(registry, done, [done, new])
    assert woken(blocked)


def test_a_child_wakes_the_drain_or_placement_that_made_it() -> None:
    registry = Registry()
    owner = registered(registry, VMPLACEMENTS, "pin")
    bystander = registered(registry, VMPLACEMENTS, "other")
    wakeups.child_changed(
        namespace="ns",
        labels={"proxmigrate.dev/placement": "pin"},
        memo=kopf.Memo(registry=registry),
    )
    assert woken(owner) and not woken(bystander)


def inventory(**nodes: list[VMInfo]) -> Inventory:
    return Inventory(
        tuple(NodeInfo(name, True, 64 * GIB, 0, 8) for name in nodes),
        tuple(vm for vms in nodes.values() for vm in vms),
    )


def vm(vmid: int, node: str, used: int = GIB) -> VMInfo:
    return VMInfo(vmid, f"vm{vmid}", node, True, 4 * GIB, used)


def test_an_inventory_change_wakes_the_placements_of_the_guests_that_changed() -> None:
    registry = Registry()
    pin100, pin101 = (
        registered(registry, VMPLACEMENTS, "p100"),
        registered(registry, VMPLACEMENTS, "p101"),
    )
    pin100.vmids, pin101.vmids = frozenset({100}), frozenset({101})
    selector = registered(registry, VMPLACEMENTS, "by-tag")  # vmids None: any guest
    a_drain = registered(registry, NODEDRAINS, "d1")
    wakeups.inventory_synced(
        registry, "ns", "lab", inventory(pve1=[vm(100, "pve1"), vm(101, "pve1")], pve2=[])
    )
    assert all(woken(w) for w in (pin100, pin101, selector, a_drain))  # the first sync
    busier = inventory(pve1=[vm(100, "pve1", used=2 * GIB), vm(101, "pve1")], pve2=[])
    wakeups.inventory_synced(registry, "ns", "lab", busier)
    assert not any(woken(w) for w in (pin100, pin101, selector, a_drain))  # usage only
    moved = inventory(pve1=[vm(101, "pve1")], pve2=[vm(100, "pve2")])
    wakeups.inventory_synced(registry, "ns", "lab", moved)
    assert woken(pin100) and not woken(pin101) and woken(selector) and woken(a_drain)


def test_a_policy_edit_reaches_the_runtime_at_once_and_wakes_the_cluster() -> None:
    registry = Registry()
    policies: list[int] = []

    class Runtime:
        def update_policy(self, policy: Any) -> None:
            policies.append(policy.max_parallel)

    registry.runtimes[("ns", "lab")] = Runtime()  # type: ignore[assignment]
    placement = registered(registry, VMPLACEMENTS, "p1")

    def event(generation: int, max_parallel: int) -> None:
        spec = {
            "endpoints": ["pve:8006"],
            "credentialsSecretRef": {"name": "token"},
            "migrationPolicy": {"maxParallel": max_parallel},
        }
        body = kopf.Body({"metadata": {"generation": generation}, "spec": spec})
        wakeups.cluster_changed(
            type="MODIFIED",
            namespace="ns",
            name="lab",
            body=body,
            memo=kopf.Memo(registry=registry),
        )

    event(1, 4)
    assert policies == [4] and woken(placement)
    event(1, 4)  # a status write: same generation
    assert policies == [4] and not woken(placement)
    event(2, 16)
    assert policies == [4, 16] and woken(placement)


class FailingThenFine(reconcile.Reconciler):
    plural = NODEDRAINS
    passes: list[float] = []
    failures = 2

    async def run(self) -> None:
        FailingThenFine.passes.append(asyncio.get_running_loop().time())
        if FailingThenFine.failures:
            FailingThenFine.failures -= 1
            raise OSError("connection reset")


class StatusKube:
    """Answers a status patch with the object as the API server would."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    async def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> Any:
        self.writes.append(status)
        meta = {"namespace": ns, "name": name, "resourceVersion": str(len(self.writes))}
        return {"metadata": meta, "spec": {"clusterRef": {"name": "lab"}}, "status": status}


def test_a_failing_pass_is_retried_with_backoff_and_its_error_shown_until_one_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = StatusKube()
    monkeypatch.setattr(reconcile, "shared_kube", lambda: kube)
    monkeypatch.setattr(reconcile, "BACKOFF_FIRST_SECONDS", 0.05)
    body = kopf.Body(
        {"metadata": {"namespace": "ns", "name": "d1"}, "spec": {"clusterRef": {"name": "lab"}}}
    )

    async def scenario() -> None:
        stopped = asyncio.Event()

        class Stopped:  # kopf.DaemonStopped's two faces: a truth value and `wait()`
            def __bool__(self) -> bool:
                return stopped.is_set()

            async def wait(self) -> None:
                await stopped.wait()

        task = asyncio.create_task(
            reconcile.reconcile_until_stopped(
                FailingThenFine,
                body,
                None,
                Registry(),
                Stopped(),  # type: ignore[arg-type]
            )
        )
        while len(FailingThenFine.passes) < 3:
            await asyncio.sleep(0.01)
        stopped.set()
        task.cancel()

    asyncio.run(scenario())
    first, second, third = FailingThenFine.passes[:3]
    assert second - first == pytest.approx(0.05, abs=0.04)
    assert third - second == pytest.approx(0.10, abs=0.05)  # doubled
    reported = kube.writes[0]["conditions"][0]
    assert (reported["type"], reported["status"], reported["reason"]) == (
        "Reconciled",
        "False",
        "ReconcileFailed",
    )
    assert "OSError: connection reset" in reported["message"]
    assert [c["type"] for c in kube.writes[-1]["conditions"]] == []  # cleared once it passes


class CreatingKube:
    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> Any:
        return body


class Children:
    def __init__(self) -> None:
        self.listed: list[dict[str, Any]] = []

    def children(self, namespace: str, label_key: str, owner: str) -> list[dict[str, Any]]:
        return list(self.listed)


def test_a_child_just_created_counts_until_the_watch_delivers_it() -> None:
    """Else a pass woken before the watch has the child would take it for deleted (a drain
    entry failed) or missing (a placement's second VMMigration for one guest)."""
    cache = Children()
    body = {"metadata": {"namespace": "ns", "name": "d1"}, "spec": {}}
    waker = Waker()
    reconciler = reconcile.Reconciler(CreatingKube(), body, cache, Registry(), waker)  # type: ignore[arg-type]
    manifest = {"metadata": {"name": "d1-100"}, "spec": {"vmid": 100, "target": "pve2"}}
    asyncio.run(reconciler.create_child(manifest))
    assert reconciler.children("proxmigrate.dev/drain") == [manifest]
    delivered = {**manifest, "status": {"phase": "Queued"}}
    cache.listed = [delivered]
    assert reconciler.children("proxmigrate.dev/drain") == [delivered]
    assert waker.created == {}


def test_a_new_cordon_wakes_only_the_placements_that_may_use_that_node() -> None:
    registry = Registry()
    first = drain("d1", "pve1")
    drain_event(registry, first, [first], type="ADDED")
    onto_pve2, onto_pve3 = (
        registered(registry, VMPLACEMENTS, "a"),
        registered(registry, VMPLACEMENTS, "b"),
    )
    onto_pve2.nodes, onto_pve3.nodes = frozenset({"pve2"}), frozenset({"pve3", "pve4"})
    second = drain("d2", "pve2")
    drain_event(registry, second, [first, second], type="ADDED")
    assert woken(onto_pve2) and not woken(onto_pve3)
