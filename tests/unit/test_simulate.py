"""`proxmigrate simulate` and its library: a tiny cluster drained on pvesim's model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxmigrate.cli import build_parser
from proxmigrate.engine import EnginePolicy, link_payload
from proxmigrate.simulate.bounds import drain_lower_bound, link_capacity
from proxmigrate.simulate.command import run
from proxmigrate.simulate.drain import DrainOptions, LibraryDrain
from proxmigrate.simulate.inventory import config_from_inventory, read_inventory
from proxmigrate.simulate.model import cluster_from_config
from proxmigrate.simulate.model_client import ModelClient
from proxmigrate.simulate.outcome import summarize
from proxmigrate.simulate.predict import predict, unpaced

GIB = 1 << 30

TINY: dict[str, Any] = {
    "nodes": [{"name": name, "memory_gib": 64, "cpus": 16} for name in ("a", "b", "c")],
    "vms": [
        {"vmid": 100, "node": "a", "memory_gib": 8, "used_gib": 4},
        {"vmid": 101, "node": "a", "memory_gib": 4, "used_gib": 2},
        {"vmid": 102, "node": "a", "memory_gib": 2, "used_gib": 1, "dirty_mib_s": 50},
        {"vmid": 103, "node": "a", "memory_gib": 16, "used_gib": 8, "ha": True},
        {"vmid": 104, "node": "a", "memory_gib": 2, "running": False},
        {"vmid": 105, "node": "a", "memory_gib": 2, "local_devices": ["hostpci0"]},
        {"vmid": 106, "node": "b", "memory_gib": 8, "used_gib": 4},
    ],
}


def crowd(vms: int) -> dict[str, Any]:
    """Many small guests that can only go to one target: its sshd sees every start."""
    return {
        "nodes": [{"name": "a", "memory_gib": 512}, {"name": "b", "memory_gib": 512}],
        "vms": [
            {"vmid": 100 + i, "node": "a", "memory_gib": 1, "used_gib": 0.5} for i in range(vms)
        ],
    }


def test_library_drain_moves_every_movable_guest() -> None:
    cluster = cluster_from_config(TINY, seed=1)
    movable = {vmid: cluster.vms[vmid].mem for vmid in (100, 101, 102, 103, 104)}
    result = LibraryDrain(cluster, ["a"], EnginePolicy(max_parallel=4), seed=1).run()
    outcome = summarize(
        cluster.ground_truth(), drained=["a"], start=result.started_at, movable=movable
    )

    assert result.succeeded == 5 and not result.failed and not result.cut_off
    assert outcome.left_behind == () and outcome.moved == 5
    assert cluster.vms[105].node == "a"  # local device: the planner leaves it
    assert {cluster.vms[vmid].node for vmid in movable} <= {"b", "c"}
    assert outcome.makespan >= drain_lower_bound(cluster_from_config(TINY, 1), ["a"], 4).seconds
    # one POST per move (PVE answers the HA guest 103's with a `hamigrate`), task lists and
    # log probes besides; never the HA endpoint, which would need Sys.Console
    assert result.api_requests["POST /nodes/{node}/qemu/{vmid}/migrate"] == 5
    assert "POST /cluster/ha/resources/{sid}/migrate" not in result.api_requests
    assert result.api_requests["GET /nodes/{node}/tasks"] > 0
    assert result.cpu_seconds > 0


def test_library_drain_retries_what_sshd_dropped() -> None:
    """Unpaced, a crowd of starts overruns the target's sshd; the runtime retries each drop."""
    cluster = cluster_from_config(crowd(40), seed=3)
    result = LibraryDrain(cluster, ["a"], unpaced(EnginePolicy(max_parallel=32)), seed=3).run()
    movable = {vmid: vm.mem for vmid, vm in cluster.vms.items()}
    outcome = summarize(
        cluster.ground_truth(), drained=["a"], start=result.started_at, movable=movable
    )
    assert 0 < result.retries <= outcome.ssh_drop_failures  # drops late in a move need none
    assert result.succeeded == 40 and not result.failed and not result.cut_off


def test_library_drain_stops_at_the_deadline() -> None:
    cluster = cluster_from_config(TINY, seed=1)
    options = DrainOptions(deadline_seconds=5.0)
    result = LibraryDrain(cluster, ["a"], EnginePolicy(max_parallel=1), options, seed=1).run()
    assert result.cut_off and result.succeeded < 5
    assert 5.0 <= result.observed_end - result.started_at <= 5.0 + options.task_poll_seconds


def test_lower_bound_is_the_drained_nodes_egress_or_the_stream_cap() -> None:
    cluster = cluster_from_config(TINY, seed=1)
    in_use = (4 + 2 + 1 + 8) * GIB  # running guests without local devices
    parallel = drain_lower_bound(cluster, ["a"], 8)
    assert parallel.bytes == in_use
    assert parallel.seconds == pytest.approx(in_use / link_capacity(cluster, "a"))
    single = drain_lower_bound(cluster, ["a"], 1)
    assert single.seconds == pytest.approx(in_use / cluster.params.network.secure_stream_cap)
    assert single.seconds > parallel.seconds


def test_summarize_reads_failures_leftovers_and_inflight() -> None:
    truth = {
        "placement": {"1": "b", "2": "a", "3": "c"},
        "migrations": {
            "1": [{"start": 10.0, "end": 20.0, "target": "b", "outcome": "ok", "reason": "ok"}],
            "2": [
                {
                    "start": 12.0,
                    "end": 13.0,
                    "target": "c",
                    "outcome": "failed",
                    "reason": "ssh_drop:/bin/true",
                }
            ],
            "3": [{"start": 15.0, "end": 30.0, "target": "c", "outcome": "ok", "reason": "ok"}],
        },
        "ssh": {
            node: {"drops": 1 if node == "c" else 0, "peak_preauth": 2} for node in ("a", "b", "c")
        },
    }
    outcome = summarize(truth, drained=["a"], start=10.0, movable={1: 100, 2: 200, 3: 300})
    assert outcome.makespan == 20.0
    assert outcome.left_behind == (2,) and outcome.moved == 2
    assert outcome.spurious_failures == 1 == outcome.ssh_drop_failures
    assert outcome.peak_inflight == 2
    assert outcome.inflight == ((0.0, 1), (2.0, 2), (3.0, 1), (5.0, 2), (10.0, 1), (20.0, 0))
    loads = {load.node: load for load in outcome.targets}
    assert loads["c"].vms == 1 and loads["c"].bytes == 300 and loads["c"].ssh_drops == 1
    assert loads["c"].peak_inbound == 1


def test_pacing_avoids_the_ssh_drops_an_unpaced_run_gets() -> None:
    prediction = predict(crowd(40), ["a"], EnginePolicy(max_parallel=32), runs=1, seed=3)
    assert prediction.paced[0].ssh_drops == 0
    assert prediction.unpaced[0].ssh_drops > 0
    assert prediction.paced[0].left_behind == 0


def test_live_inventory_becomes_an_equivalent_cluster() -> None:
    local = {"vmid": 107, "node": "a", "disks": [{"storage": "ceph"}, {"storage": "local-lvm"}]}
    original = cluster_from_config({**TINY, "vms": [*TINY["vms"], local]}, seed=1)
    client = ModelClient(original, clock=lambda: original.now)
    inventory = read_inventory(client, ["a"])
    config = config_from_inventory(inventory, nic_gbit=25.0, max_startups="10:30:60")
    rebuilt = cluster_from_config(config, seed=1)
    assert sorted(rebuilt.vms) == sorted(original.vms)
    assert rebuilt.vms[105].local_devices == ["hostpci0"]
    assert [disk.volid for disk in rebuilt.vms[107].local_disks] == ["local-lvm:vm-107-disk-1"]
    assert client.requests["GET /nodes/{node}/qemu/{vmid}/migrate"] == 7  # a's guests only
    assert rebuilt.vms[103].ha_managed and not rebuilt.vms[104].running
    assert rebuilt.vms[100].mem == original.vms[100].mem
    assert rebuilt.nodes["a"].nic_gbit == 25.0
    assert str(rebuilt.nodes["b"].sshd.params.max_startups) == "10:30:60"


def test_command_compares_max_parallel_values(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(TINY))
    args = build_parser().parse_args(
        ["simulate", "--cluster", str(path), "--drain", "a", "--compare", "1,4", "--runs", "1"]
    )
    out, err = io.StringIO(), io.StringIO()
    assert run(args, out, err) == 0
    text = out.getvalue()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    one, four = (float(rows[k].split("|")[2].split()[0]) for k in ("1", "4"))
    assert four < one  # four at a time beats one at a time on a 10 Gbit/s link
    assert "105 (vm105): uses local devices" in text
    assert {"b", "c"} <= rows.keys()  # the per-target table
    assert "done" in err.getvalue()  # the progress bar


def test_command_rejects_an_unknown_node(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(TINY))
    args = build_parser().parse_args(["simulate", "--cluster", str(path), "--drain", "zz"])
    err = io.StringIO()
    assert run(args, io.StringIO(), err) == 2
    assert "unknown node(s) zz" in err.getvalue()


def test_declared_links_reach_the_plan_and_the_engine_alike() -> None:
    """As a ProxmoxCluster's `nodeLinks` reach both; undeclared, neither knows them."""
    config = {
        "nodes": [
            {"name": "a", "memory_gib": 256, "nic_gbit": 10},
            {"name": "b", "memory_gib": 256, "nic_gbit": 10},
            {"name": "c", "memory_gib": 256, "nic_gbit": 1},
        ],
        "vms": [{"vmid": 100 + i, "node": "a", "memory_gib": 4, "used_gib": 2} for i in range(12)],
    }
    policy = EnginePolicy(max_parallel=4)

    def to_c(declare: bool) -> tuple[int, float | None]:
        cluster = cluster_from_config(config, seed=1)
        result = LibraryDrain(cluster, ["a"], policy, DrainOptions(declare_links=declare)).run()
        moves = [move for plan in result.plans for move in plan.moves]
        engine = LibraryDrain(cluster, ["a"], policy, DrainOptions(declare_links=declare))
        return sum(move.target == "c" for move in moves), engine._engine_policy().declared_link("c")

    declared_to_c, declared_capacity = to_c(True)
    undeclared_to_c, undeclared_capacity = to_c(False)
    assert declared_capacity == link_payload(1.0)
    assert undeclared_capacity is None
    assert declared_to_c < undeclared_to_c  # the 1 Gbit/s target gets its link's share
