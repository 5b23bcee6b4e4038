"""The real ProxLB (pinned, unmodified) drains a node in maintenance mode against pvesim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.core import ResourceException

from pvesim.contenders.proxlb_runner import ProxlbResult, run_proxlb
from pvesim.testing import PvesimProcess
from tests.e2e.test_pvesim_server import token_api

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MAINTENANCE = "pve1"
PARALLEL_JOBS = 2
STOPPED_VMID = 104
HA_VMID = 105


def _cluster() -> dict[str, Any]:
    """4 nodes, 12 VMs; pve1 holds plain running VMs, one stopped VM and one HA VM."""
    nodes = [{"name": f"pve{i}", "memory_gib": 64, "cpus": 16} for i in range(1, 5)]
    placement = ["pve1"] * 6 + ["pve2", "pve2", "pve3", "pve3", "pve4", "pve4"]
    vms = []
    for offset, node in enumerate(placement):
        vmid = 100 + offset
        vms.append(
            {
                "vmid": vmid,
                "name": f"vm{vmid}",
                "node": node,
                "memory_gib": 4,
                "used_gib": 2,
                "running": vmid != STOPPED_VMID,
                "ha": vmid == HA_VMID,
                "pool": "prod" if vmid % 2 else None,
                "tags": ["web"] if vmid % 3 == 0 else [],
            }
        )
    return {"pve_version": 8, "nodes": nodes, "vms": vms}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PvesimProcess]:
    config = Path(tmp_path_factory.mktemp("proxlb")) / "cluster.yaml"
    config.write_text(yaml.safe_dump(_cluster()))
    with PvesimProcess("--config", str(config), "--time-scale", "50", "--seed", "1") as s:
        yield s


@pytest.fixture(scope="module")
def drained(sim: PvesimProcess) -> tuple[ProxlbResult, dict[str, Any]]:
    before = sim.state()["placement"]
    result = run_proxlb(sim, [MAINTENANCE], PARALLEL_JOBS, timeout=50)
    return result, {"before": before, "after": sim.state()}


def test_proxlb_exits_cleanly_within_budget(drained: tuple[ProxlbResult, dict[str, Any]]) -> None:
    result, _ = drained
    assert not result.timed_out, result.log_tail
    assert result.exit_code == 0, result.log_tail
    assert result.errors == []
    assert result.duration < 50


def test_running_guests_leave_the_maintenance_node(
    drained: tuple[ProxlbResult, dict[str, Any]],
) -> None:
    _, truth = drained
    before, after = truth["before"], truth["after"]["placement"]
    on_maintenance = {int(v) for v, node in before.items() if node == MAINTENANCE}
    left_behind = {int(v) for v, node in after.items() if node == MAINTENANCE}
    # ProxLB only collects running guests (models/guests.py), so the stopped one stays.
    assert left_behind == {STOPPED_VMID}
    assert on_maintenance - left_behind == {100, 101, 102, 103, HA_VMID}


def test_migrations_went_through_the_api(drained: tuple[ProxlbResult, dict[str, Any]]) -> None:
    """What ProxLB logged is what pvesim ran; its extra rebalancing never targets pve1."""
    result, truth = drained
    state = truth["after"]
    logged = {int(m.guest.removeprefix("vm")): (m.source, m.target) for m in result.migrations}
    ran = {int(v): (ms[-1]["source"], ms[-1]["target"]) for v, ms in state["migrations"].items()}
    assert ran == logged
    assert {100, 101, 102, 103, HA_VMID} <= set(ran)
    assert all(target != MAINTENANCE for _, target in ran.values())
    assert all(ms[-1]["outcome"] == "ok" for ms in state["migrations"].values())
    assert state["api_requests"]["POST /nodes/{node}/qemu/{vmid}/migrate"] == len(logged)


def test_parallel_jobs_bound_the_inflight_migrations(
    drained: tuple[ProxlbResult, dict[str, Any]],
) -> None:
    _, truth = drained
    assert 1 <= truth["after"]["peak_inflight_migrations"] <= PARALLEL_JOBS


def test_pvesim_answers_what_proxlb_reads_as_pve_does(
    sim: PvesimProcess, drained: tuple[ProxlbResult, dict[str, Any]]
) -> None:
    api = token_api(sim)
    perms = api.access.permissions.get()
    assert {"/", "/vms", "/storage", "/nodes"} <= set(perms)
    assert perms["/"]["VM.Migrate"] == 1 and perms["/"]["Sys.Audit"] == 1
    assert set(api.access.permissions.get(path="/vms/100")) == {"/vms/100"}
    rows = api.nodes("pve2").rrddata.get(timeframe="hour", cf="MAX")
    assert len(rows) == 70 and rows[1]["time"] - rows[0]["time"] == 60
    assert rows[-1]["memused"] > 0 and "pressurememoryfull" not in rows[-1]  # PVE 8 has no PSI
    node_of_100 = drained[1]["after"]["placement"]["100"]
    vm100 = api.nodes(node_of_100).qemu(100)
    assert vm100.rrddata.get(timeframe="day")[0]["maxmem"] == 4 << 30
    assert api.nodes("pve2").version.get()["version"].startswith("8.")
    tasks = api.nodes(MAINTENANCE).tasks.get(source="all", typefilter="qmigrate")
    newest = max(int(t["starttime"]) for t in tasks)
    assert len(api.nodes(MAINTENANCE).tasks.get(source="all", since=newest)) >= 1
    assert api.nodes(MAINTENANCE).tasks.get(source="all", since=newest + 1) == []
    with pytest.raises(ResourceException, match="400"):
        vm100.migrate.post(target="pve4", **{"with-conntrack-state": 1})
    with pytest.raises(ResourceException, match="400"):
        api.nodes("pve2").rrddata.get(timeframe="minute")
