"""The Kubernetes side misbehaves mid-drain; nothing is lost, nothing moves twice."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from tests.chaos.apiproxy import ApiProxy
from tests.chaos.scenario import Scene, run_drain
from tests.support.controlplane import ControlPlane


def test_status_writes_refused_for_10_s_then_connections_black_holed_for_30_s(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """One drain through a proxy: every VMMigration status write answered 500/409/429 for
    10 s; then, once the drain moves again, every request and open watch hangs for 30 s."""
    with ApiProxy(plane.kubeconfig) as proxy:

        def fault(scene: Scene) -> None:
            proxy.refuse_status_writes(10)
            time.sleep(10)
            scene.wait_moved(scene.moved() + 2)
            proxy.blackhole(30)
            time.sleep(30)
            scene.fault_ended = time.monotonic()

        outcome = run_drain(
            plane, tmp_path, "refused-then-blackhole", 40, fault,
            kubeconfig=proxy.kubeconfig(tmp_path / "proxy.kubeconfig"), timeout=180,
        )  # fmt: skip
        assert proxy.refused > 0
    outcome.check(40)


def _restart_apiserver(plane: ControlPlane, down_seconds: float) -> None:
    """Kill kube-apiserver (etcd keeps its data), wait, start it again with the same flags."""
    apiserver = plane._processes[1]
    argv = list(apiserver.args)  # type: ignore[arg-type]
    apiserver.kill()  # a crash; a graceful stop waits for its watches to drain
    apiserver.wait(10)
    time.sleep(down_seconds)
    log = open(plane.workdir / "kube-apiserver.log", "ab")  # noqa: SIM115
    plane._processes[1] = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    plane._wait_ready(60)


def test_apiserver_restarted_for_5_s_and_for_30_s(plane: ControlPlane, tmp_path: Path) -> None:
    def fault(scene: Scene) -> None:
        _restart_apiserver(plane, 5)
        scene.wait_moved(scene.moved() + 2)
        _restart_apiserver(plane, 30)
        scene.fault_ended = time.monotonic()

    outcome = run_drain(plane, tmp_path, "apiserver-restart", 40, fault, timeout=180)
    outcome.check(40)


def test_operator_sigkilled_5_times(plane: ControlPlane, tmp_path: Path) -> None:
    rng = random.Random(11)

    def fault(scene: Scene) -> None:
        (operator,) = scene.replicas
        for _ in range(5):
            time.sleep(rng.uniform(0.5, 3.0))
            operator.kill()
            operator.start()
        scene.fault_ended = time.monotonic()

    outcome = run_drain(plane, tmp_path, "sigkill", 100, fault, time_scale=80, timeout=240)
    outcome.check(100)
