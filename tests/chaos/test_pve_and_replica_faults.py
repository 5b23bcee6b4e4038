"""PVE misbehaves, or the active replica dies, mid-drain."""

from __future__ import annotations

import time
from pathlib import Path

from tests.chaos.scenario import Scene, run_drain
from tests.support.controlplane import ControlPlane


def test_pve_5xx_with_latency_and_an_endpoint_closing(plane: ControlPlane, tmp_path: Path) -> None:
    """10 % of PVE calls answer 500 with 50 ms latency throughout; the first endpoint goes
    away with its open connections."""

    def fault(scene: Scene) -> None:
        scene.sim.fault(api_error_rate=0.1, api_latency=0.05)
        scene.wait_moved(scene.moved() + 3)
        scene.sim.fault(endpoint_down=0)
        scene.wait_moved(scene.moved() + 3)
        scene.sim.fault(api_error_rate=0.0, api_latency=0.0)
        scene.fault_ended = time.monotonic()

    outcome = run_drain(
        plane, tmp_path, "pve-faults", 40, fault, sim_args=("--endpoints", "2"), timeout=180
    )
    outcome.check(40)


def test_a_target_node_offline_mid_drain(plane: ControlPlane, tmp_path: Path) -> None:
    def fault(scene: Scene) -> None:
        scene.sim.fault(node_offline="pve3")
        scene.fault_ended = time.monotonic()

    outcome = run_drain(plane, tmp_path, "node-offline", 40, fault, timeout=180)
    outcome.check(40)
    assert outcome.moved >= 30, "the other two targets had room for the rest"


def test_two_replicas_the_active_one_killed(plane: ControlPlane, tmp_path: Path) -> None:
    def fault(scene: Scene) -> None:
        scene.replicas[0].kill()
        scene.fault_ended = time.monotonic()

    outcome = run_drain(plane, tmp_path, "failover", 30, fault, replicas=2, timeout=180)
    outcome.check(30)
