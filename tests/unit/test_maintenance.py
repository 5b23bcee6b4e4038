"""NodeMaintenance: its CRD against NodeDrain's, the spec, each node's entry as its NodeDrain
shows it, and the controller's steps over a fake cluster (edges faked: caches, kube, PVE)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxmigrate.api import NodeMaintenanceSpec, ProxmoxClusterSpec, SpecError
from proxmigrate.api.enums import DrainPhase, MaintenanceNodePhase, MaintenancePhase
from proxmigrate.api.maintenance import DONE_ANNOTATION, MAINTENANCE_LABEL, done_nodes
from proxmigrate.controllers import events, maintenances, wakeups
from proxmigrate.controllers.context import ClusterContext
from proxmigrate.controllers.registry import Registry, Waker
from proxmigrate.engine import EnginePolicy, MigrationEngine
from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.status.maintenance import NodeEntry, Verdict, maintenance_status, observe

CRDS = Path(__file__).resolve().parents[2] / "crds"
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
GIB = 1024**3
NodePhase = MaintenanceNodePhase


def crd_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{plural}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# --- the CRD -----------------------------------------------------------------------------------


def test_drain_template_is_the_nodedrain_spec_without_what_the_maintenance_sets() -> None:
    drain = crd_schema("nodedrains")["properties"]["spec"]["properties"]
    template = crd_schema("nodemaintenances")["properties"]["spec"]["properties"]["drainTemplate"]
    set_by_maintenance = {
        "clusterRef",
        "nodeName",
        "dryRun",
        "returnGuests",
        "maintenanceDone",
        "avoidTargets",
    }
    expected = {name: node for name, node in drain.items() if name not in set_by_maintenance}
    assert template["properties"] == expected


def test_node_phases_match_the_crd() -> None:
    status = crd_schema("nodemaintenances")["properties"]["status"]["properties"]
    phases = status["nodes"]["items"]["properties"]["phase"]["enum"]
    assert phases == [phase.value for phase in NodePhase]


# --- the spec ----------------------------------------------------------------------------------


def spec(**fields: Any) -> NodeMaintenanceSpec:
    return NodeMaintenanceSpec.from_spec(
        {"clusterRef": {"name": "lab"}, "nodes": ["pve1", "pve2"], **fields}
    )


def test_spec_defaults_and_the_drain_each_node_gets() -> None:
    parsed = spec(drainTemplate={"targets": ["pve1", "pve3"], "maxParallel": 4})
    assert (parsed.nodes_at_once, parsed.return_guests, parsed.paused) == (1, True, False)
    document = parsed.drain_document("pve1", ["pve2"])
    assert document == {
        "clusterRef": {"name": "lab"},
        "nodeName": "pve1",
        "returnGuests": True,
        "targets": ["pve3"],  # never the drained node itself
        "maxParallel": 4,
        "avoidTargets": ["pve2"],
    }
    drain = parsed.drain("pve1", ["pve2"])
    assert drain.avoid_targets == {"pve2"} and drain.max_parallel == 4


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nodes": []}, "spec.nodes must list at least one node"),
        ({"nodesAtOnce": 0}, "spec.nodesAtOnce must be at least 1"),
        ({"onFailure": "retry"}, "spec.onFailure: expected one of stop, continue"),
        ({"drainTemplate": {"stoppedVMs": "keep"}}, "spec.drainTemplate.stoppedVMs"),
    ],
)
def test_bad_specs_say_which_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(**fields)


def test_done_annotation_names_nodes_by_comma_or_space() -> None:
    assert done_nodes({DONE_ANNOTATION: "pve1, pve2 pve3"}) == {"pve1", "pve2", "pve3"}
    assert done_nodes({"other": "pve1"}) == frozenset()
    assert done_nodes(None) == frozenset()


# --- a node's entry from its NodeDrain -----------------------------------------------------------


def drain(phase: str | None, **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"migrated": 3, "returned": 2}
    if phase:
        status["phase"] = phase
        status["conditions"] = [{"type": "Ready", "message": f"it is {phase}"}]
    return {"metadata": {"name": "m-pve1"}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("drain_phase", "node_phase"),
    [
        (None, NodePhase.DRAINING),
        (DrainPhase.DRAINING, NodePhase.DRAINING),
        (DrainPhase.DRAINED, NodePhase.IN_MAINTENANCE),
        (DrainPhase.RETURNING, NodePhase.RETURNING),
        (DrainPhase.RETURNED, NodePhase.DONE),
        (DrainPhase.BLOCKED, NodePhase.BLOCKED),
        (DrainPhase.FAILED, NodePhase.FAILED),
    ],
)
def test_a_node_follows_its_drain(drain_phase: str | None, node_phase: NodePhase) -> None:
    entry = observe(NodeEntry("pve1", NodePhase.DRAINING, 1, "m-pve1"), drain(drain_phase), NOW)
    assert entry.phase is node_phase
    assert (entry.migrated, entry.returned) == (3, 2)
    assert ("it is" in entry.message) == (node_phase in (NodePhase.BLOCKED, NodePhase.FAILED))
    assert (entry.maintenance_time is not None) == (node_phase is NodePhase.IN_MAINTENANCE)


def test_maintenance_done_on_the_drain_counts_before_its_controller_acts() -> None:
    entry = NodeEntry("pve1", NodePhase.IN_MAINTENANCE, 1, "m-pve1")
    assert observe(entry, drain("Drained", maintenanceDone=True), NOW).phase is NodePhase.RETURNING


def test_a_drain_deleted_under_a_running_node_fails_it_and_final_entries_stay() -> None:
    running = NodeEntry("pve1", NodePhase.RETURNING, 1, "m-pve1")
    failed = observe(running, None, NOW)
    assert failed.phase is NodePhase.FAILED and "m-pve1 was deleted" in failed.message
    assert failed.completion_time is not None
    done = NodeEntry("pve1", NodePhase.DONE, 1, "m-pve1")
    assert observe(done, drain("Draining"), NOW) == done
    assert observe(NodeEntry("pve2"), None, NOW) == NodeEntry("pve2")


def test_status_columns_name_the_current_step() -> None:
    entries = [
        NodeEntry("pve1", NodePhase.DONE, 1, "m-pve1", migrated=4, returned=4),
        NodeEntry("pve2", NodePhase.IN_MAINTENANCE, 2, "m-pve2", migrated=3),
        NodeEntry("pve3", NodePhase.RETURNING, 2, "m-pve3", migrated=1),
        NodeEntry("pve4"),
    ]
    verdict = Verdict(MaintenancePhase.RUNNING, "StepRunning", "1 of 4 nodes done")
    status = maintenance_status(entries, verdict, {}, 3, NOW)
    assert status["currentNodes"] == "pve2,pve3"
    assert status["stepPhase"] == "InMaintenance"  # the least advanced node of the step
    assert (status["step"], status["done"], status["total"], status["migrated"]) == (2, 1, 4, 12)
    by_type = {c["type"]: c["status"] for c in status["conditions"]}
    assert by_type == {
        "Ready": "False",
        "Progressing": "True",
        "Reconciling": "True",
        "Stalled": "False",
        "Degraded": "False",
    }


# --- the controller over a fake cluster ----------------------------------------------------------


class FakeRuntime:
    name = "lab"
    label = "ns/lab"

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.engine = MigrationEngine(EnginePolicy())  # nothing in flight

    async def refresh_inventory(self, max_age: float = 0, **_: Any) -> Inventory:
        return self.inventory


class FakeCaches:
    def __init__(self) -> None:
        self.drains_by_name: dict[str, dict[str, Any]] = {}

    def drains(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.drains_by_name.values())

    def placements(self, namespace: str) -> list[dict[str, Any]]:
        return []


class FakeKube:
    """Creates, patches and deletes NodeDrains in the fake cache, records status writes."""

    def __init__(self, caches: FakeCaches) -> None:
        self.caches = caches
        self.status: dict[str, Any] = {}

    async def create(self, plural: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        self.caches.drains_by_name[body["metadata"]["name"]] = {**body, "status": {}}
        return body

    async def patch(self, plural: str, ns: str, name: str, body: dict[str, Any]) -> Any:
        self.caches.drains_by_name[name]["spec"].update(body["spec"])
        return self.caches.drains_by_name[name]

    async def delete(self, plural: str, ns: str, name: str) -> bool:
        return self.caches.drains_by_name.pop(name, None) is not None

    async def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> Any:
        self.status.update(status)
        return None


def inventory() -> Inventory:
    """Four nodes of 32 GiB, each with two 4 GiB guests."""
    guests = [
        VMInfo(100 + 10 * n + i, f"vm{n}{i}", f"pve{n}", True, 4 * GIB, 4 * GIB)
        for n in range(1, 5)
        for i in range(2)
    ]
    used: dict[str, int] = defaultdict(int)
    for guest in guests:
        used[guest.node] += guest.max_memory
    nodes = tuple(NodeInfo(f"pve{n}", True, 32 * GIB, used[f"pve{n}"], 16) for n in range(1, 5))
    return Inventory(nodes, tuple(guests))


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, **spec_fields: Any) -> None:
        self.caches = FakeCaches()
        self.kube = FakeKube(self.caches)
        self.body: dict[str, Any] = {
            "apiVersion": "proxmigrate.dev/v1alpha1",
            "kind": "NodeMaintenance",
            "metadata": {"namespace": "ns", "name": "m", "uid": "u1", "generation": 1},
            "spec": {
                "clusterRef": {"name": "lab"},
                "nodes": ["pve1", "pve2", "pve3", "pve4"],
                **spec_fields,
            },
        }
        cluster = ProxmoxClusterSpec.from_spec(
            {"endpoints": ["pve1"], "credentialsSecretRef": {"name": "pve"}}
        )
        context = ClusterContext(FakeRuntime(inventory()), cluster, inventory())  # type: ignore[arg-type]
        self.context = context

        async def cluster_context(*_: Any) -> ClusterContext:
            return context

        monkeypatch.setattr(maintenances, "cluster_context", cluster_context)
        monkeypatch.setattr(events, "post", lambda *_: None)

    def run(self) -> dict[str, Any]:
        body = {**self.body, "status": dict(self.kube.status)}
        reconciler = maintenances.MaintenanceReconciler(
            self.kube,  # type: ignore[arg-type]
            body,
            self.caches,  # type: ignore[arg-type]
            Registry(),
            Waker(),
        )
        asyncio.run(reconciler.run())
        return self.kube.status

    def drain_phase(self, node: str, phase: str) -> None:
        drain = self.caches.drains_by_name[f"m-{node}"]
        drain["status"] = {"phase": phase}
        if phase in ("Returning", "Returned"):
            drain["spec"]["maintenanceDone"] = True  # as the done-signal left it

    def nodes(self) -> dict[str, str]:
        return {entry["name"]: entry["phase"] for entry in self.kube.status["nodes"]}

    def signal(self, *nodes: str) -> None:
        self.body["metadata"]["annotations"] = {DONE_ANNOTATION: ",".join(nodes)}


def test_steps_run_in_order_with_later_nodes_avoided(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    status = h.run()
    assert status["phase"] == "Running" and status["currentNodes"] == "pve1"
    assert [step["nodes"] for step in status["plan"]["steps"]] == [
        ["pve1"],
        ["pve2"],
        ["pve3"],
        ["pve4"],
    ]
    first = h.caches.drains_by_name["m-pve1"]
    assert first["spec"]["avoidTargets"] == ["pve2", "pve3", "pve4"]
    assert first["spec"]["returnGuests"] is True
    assert first["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert first["metadata"]["labels"] == {MAINTENANCE_LABEL: "m"}

    h.drain_phase("pve1", "Drained")
    assert h.run()["stepPhase"] == "InMaintenance"
    assert set(h.caches.drains_by_name) == {"m-pve1"}  # no next step before the done-signal

    h.signal("pve1")
    assert h.run()["nodes"][0]["phase"] == "Returning"
    assert h.caches.drains_by_name["m-pve1"]["spec"]["maintenanceDone"] is True

    h.drain_phase("pve1", "Returned")
    status = h.run()
    assert h.nodes() == {"pve1": "Done", "pve2": "Draining", "pve3": "Pending", "pve4": "Pending"}
    assert status["step"] == 2
    assert h.caches.drains_by_name["m-pve2"]["spec"]["avoidTargets"] == ["pve3", "pve4"]
    assert [step["step"] for step in status["plan"]["steps"]] == [2, 3, 4]

    for node in ("pve2", "pve3", "pve4"):
        h.drain_phase(node, "Returned")
        status = h.run()
    assert status["phase"] == "Succeeded" and status["done"] == 4
    assert status["completionTime"] is not None


def test_paused_starts_no_step_and_no_return(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, paused=True)
    assert h.run()["phase"] == "Paused"
    assert h.caches.drains_by_name == {}
    h.body["spec"]["paused"] = False
    h.run()
    h.drain_phase("pve1", "Drained")
    h.body["spec"]["paused"] = True
    h.signal("pve1")
    assert h.run()["phase"] == "Running"  # the node waits in maintenance
    assert "maintenanceDone" not in h.caches.drains_by_name["m-pve1"]["spec"]


def test_a_failed_node_stops_the_maintenance_or_is_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = Harness(monkeypatch)
    stop.run()
    stop.drain_phase("pve1", "Failed")
    status = stop.run()
    assert status["phase"] == "Failed" and "node pve1" in status["conditions"][0]["message"]
    assert "m-pve1" in stop.caches.drains_by_name  # kept for inspection
    assert "m-pve2" not in stop.caches.drains_by_name

    go_on = Harness(monkeypatch, onFailure="continue")
    go_on.run()
    go_on.drain_phase("pve1", "Blocked")
    status = go_on.run()
    assert go_on.nodes()["pve1"] == "Failed" and go_on.nodes()["pve2"] == "Draining"
    assert "m-pve1" not in go_on.caches.drains_by_name  # its cordon is lifted


def test_without_return_the_done_signal_ends_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, returnGuests=False)
    h.run()
    assert h.caches.drains_by_name["m-pve1"]["spec"]["returnGuests"] is False
    h.drain_phase("pve1", "Drained")
    h.signal("pve1")
    h.run()
    assert h.nodes()["pve1"] == "Done"
    assert set(h.caches.drains_by_name) == {"m-pve2"}


def test_a_dry_run_plans_every_step_and_creates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, dryRun=True, nodesAtOnce=2)
    status = h.run()
    assert h.caches.drains_by_name == {}
    assert [step["nodes"] for step in status["plan"]["steps"]] == [
        ["pve1", "pve2"],
        ["pve3", "pve4"],
    ]
    assert status["plan"]["steps"][0]["moves"] == 4
    assert status["conditions"][0]["reason"] == "DryRun"


def test_a_step_that_does_not_fit_blocks_before_anything_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, nodesAtOnce=3)
    status = h.run()
    assert status["phase"] == "Blocked"
    assert "step 1 (pve1, pve2, pve3)" in status["conditions"][0]["message"]
    assert h.caches.drains_by_name == {}


def test_an_invalid_spec_blocks_and_keeps_what_the_nodes_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    h.run()
    h.body["spec"]["drainTemplate"] = {"localDisks": "copy"}  # stored before a schema change
    status = h.run()
    assert status["phase"] == "Blocked"
    assert "spec.drainTemplate.localDisks" in status["conditions"][0]["message"]
    assert h.nodes()["pve1"] == "Draining"  # its record is kept


# --- wake-ups ------------------------------------------------------------------------------------


class Memo:
    def __init__(self) -> None:
        self.registry = Registry()


def test_woken_by_its_spec_annotation_and_drains_not_its_own_status() -> None:
    memo = Memo()
    waker = memo.registry.waker(("nodemaintenances", "ns", "m"))
    body: dict[str, Any] = {"metadata": {"generation": 1, "annotations": {}}}

    def event(kind: str = "MODIFIED") -> bool:
        wakeups.maintenance_changed(
            type=kind,
            namespace="ns",
            name="m",
            body=body,  # type: ignore[arg-type]
            memo=memo,
        )
        return asyncio.run(waker.sleep(0))

    assert event()  # first sight
    assert not event()  # its own status write: same generation, same annotation
    body["metadata"]["annotations"] = {DONE_ANNOTATION: "pve1", "other": "x"}
    assert event()  # the done-signal
    body["metadata"]["annotations"]["other"] = "y"
    assert not event()  # someone else's annotation
    body["metadata"]["generation"] = 2
    assert event()  # paused, resumed

    def drain_event(labels: dict[str, str]) -> bool:
        wakeups.maintenance_drain_changed(namespace="ns", labels=labels, memo=memo)  # type: ignore[arg-type]
        return asyncio.run(waker.sleep(0))

    assert drain_event({MAINTENANCE_LABEL: "m"})
    assert not drain_event({MAINTENANCE_LABEL: "other"})
    assert not drain_event({})


def test_with_continue_an_offline_node_is_skipped_not_blocking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    go_on = Harness(monkeypatch, onFailure="continue")
    inventory = go_on.context.inventory
    offline = tuple(
        dataclasses.replace(n, online=False) if n.name == "pve3" else n for n in inventory.nodes
    )
    go_on.context.runtime.inventory = dataclasses.replace(inventory, nodes=offline)  # type: ignore[attr-defined]
    go_on.run()
    assert go_on.nodes() == {
        "pve1": "Draining",
        "pve2": "Pending",
        "pve3": "Skipped",
        "pve4": "Pending",
    }
    assert go_on.kube.status["nodes"][2]["message"] == "offline when its step came"
    for node in ("pve1", "pve2", "pve4"):
        go_on.drain_phase(node, "Returned")
        status = go_on.run()
    assert (
        status["phase"] == "Failed"
        and "3 of 4 nodes done, 1 skipped" in status["conditions"][0]["message"]
    )

    stop = Harness(monkeypatch)
    stop.context.runtime.inventory = dataclasses.replace(inventory, nodes=offline)  # type: ignore[attr-defined]
    status = stop.run()
    assert (
        status["phase"] == "Blocked" and "'pve3' is offline" in status["conditions"][0]["message"]
    )


def test_a_later_step_that_no_longer_fits_is_named_by_its_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    h.run()
    h.drain_phase("pve1", "Returned")
    inventory = h.context.inventory
    full = tuple(dataclasses.replace(n, max_memory=9 * GIB) for n in inventory.nodes)
    h.context.runtime.inventory = dataclasses.replace(inventory, nodes=full)  # type: ignore[attr-defined]
    status = h.run()
    assert status["phase"] == "Blocked"
    assert status["conditions"][0]["message"].startswith("step 2 (pve2)")
    assert "m-pve2" not in h.caches.drains_by_name
