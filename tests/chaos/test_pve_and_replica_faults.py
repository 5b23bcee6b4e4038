"""PVE misbehaves, or the active replica dies, mid-drain."""

from __future__ import annotations

import time
from pathlib import Path

from proxmigrate.controlplane import ControlPlane
from tests.chaos.scenario import Scene, run_drain


def test_pve_5xx_with_latency_an_endpoint_closing_and_a_node_offline(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """10 % of PVE calls answer 500 with 50 ms latency throughout; the first endpoint goes
    away with its open connections; a target node goes offline for good."""

    def fault(scene: Scene) -> None:
        scene.sim.fault(api_error_rate=0.1, api_latency=0.05)
        scene.wait_moved(scene.moved() + 3)
        scene.sim.fault(endpoint_down=0)
        scene.wait_moved(scene.moved() + 3)
        scene.sim.fault(node_offline="pve3")
        scene.wait_moved(scene.moved() + 3)
        scene.sim.fault(api_error_rate=0.0, api_latency=0.0)
        scene.fault_ended = time.monotonic()

    outcome = run_drain(
        plane, tmp_path, "pve-faults", 40, fault, sim_args=("--endpoints", "2"), timeout=180
    )
    outcome.check(40)


def test_two_replicas_the_active_one_killed(plane: ControlPlane, tmp_path: Path) -> None:
    def fault(scene: Scene) -> None:
        scene.replicas[0].kill()
        scene.fault_ended = time.monotonic()

    outcome = run_drain(plane, tmp_path, "failover", 30, fault, replicas=2, timeout=180)
    outcome.check(30)
