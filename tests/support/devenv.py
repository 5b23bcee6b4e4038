"""A local proxmigrate environment: the operator as a process, wired to pvesim.

Shared by the end-to-end tests, `make demo` and the benchmarks, so they all run the real
operator binary against a real kube-apiserver and a real HTTPS PVE API.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from proxmigrate.api.constants import (
    API_VERSION,
    GROUP,
    PROXMOX_CLUSTER,
    PROXMOXCLUSTERS,
    VERSION,
)
from tests.support.controlplane import REPO_ROOT, free_port, tail_file


class OperatorProcess:
    """`python -m proxmigrate run` against a kubeconfig; logs to `log_path`.

    Create its namespace first, as a deployment would: kopf lists namespaces, then watches
    from a second listing whose items it ignores, so a namespace created between the two
    would never be watched.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespace: str | None = None,  # None: all namespaces
        peering: str = "none",
        priority: int = 0,
        extra_env: dict[str, str] | None = None,
        task_poll_seconds: float = 0.25,
        peering_lifetime_seconds: int = 60,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespace = namespace
        self.peering = peering
        self.priority = priority
        self.extra_env = extra_env or {}
        self.task_poll_seconds = task_poll_seconds
        self.peering_lifetime_seconds = peering_lifetime_seconds
        self.extra_args = extra_args
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> OperatorProcess:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), **self.extra_env)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT / "operator"), env.get("PYTHONPATH")])
        )
        argv = [
            sys.executable,
            "-m",
            "proxmigrate",
            "run",
            "--bind-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            f"--peering={self.peering}",
            f"--priority={self.priority}",
            f"--task-poll-seconds={self.task_poll_seconds}",
            f"--peering-lifetime={self.peering_lifetime_seconds}",
            *self.extra_args,
        ]
        argv += [f"--namespace={self.namespace}"] if self.namespace else ["--all-namespaces"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"operator exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
                ) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not healthy after {timeout} s:\n{self.tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as answer:
            return str(answer.read().decode())

    def kill(self) -> None:
        """SIGKILL: no clean-up, as a crash or an OOM kill would leave things."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def tail(self, lines: int = 40) -> str:
        return tail_file(self.log_path, lines)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except ApiException as error:
        if error.status != 409:
            raise


def create_cluster_for_pvesim(
    api: client.ApiClient,
    namespace: str,
    name: str,
    sim: Any,
    migration_policy: dict[str, Any] | None = None,
    *,
    sync_interval_seconds: int = 5,
) -> dict[str, Any]:
    """A Secret with pvesim's API token and a ProxmoxCluster trusting pvesim's CA."""
    ensure_namespace(api, namespace)
    secret_name = f"{name}-token"
    data = {"tokenId": sim.token_id, "tokenSecret": sim.token_secret}
    secret = {
        "metadata": {"name": secret_name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    try:
        client.CoreV1Api(api).create_namespaced_secret(namespace, secret)
    except ApiException as error:
        if error.status != 409:
            raise
    body = {
        "apiVersion": API_VERSION,
        "kind": PROXMOX_CLUSTER.kind,
        "metadata": {"name": name},
        "spec": {
            "endpoints": [f"{sim.host}:{sim.port}"],
            "credentialsSecretRef": {"name": secret_name},
            "tls": {"caBundle": Path(sim.ca_cert).read_text()},
            "inventory": {"syncIntervalSeconds": sync_interval_seconds},
            "migrationPolicy": migration_policy or {},
        },
    }
    return dict(
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PROXMOXCLUSTERS, body
        )
    )


def wait_for(
    predicate: Any, timeout: float, interval: float = 0.5, message: str = "condition"
) -> Any:
    """Poll `predicate()` until it returns something truthy; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
