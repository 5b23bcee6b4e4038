"""The chart's alert rules and the dashboard's queries on a real Prometheus server that
scrapes a live operator while it drains a pvesim node with faults injected: sshd drops on
the target, a blocked drain, a PVE API outage and a broken token. Each alert is asserted
through Prometheus' HTTP API to go pending and firing when its cause is there, and the
alerts that do not name that cause to stay quiet. The rules are rendered by the chart with
test values (1 s evaluation, `for:` of a few seconds)."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.operator_env import TIME_SCALE, create, get, scaled_policy, wait_cluster_decided
from tests.support.controlplane import ControlPlane, free_port, tail_file, tool
from tests.support.devenv import OperatorProcess, create_cluster_for_pvesim, wait_for
from tests.unit.test_chart import CHART, only, render

FOR = "3s"  # `for:` of the alerts this test waits for (and of those it expects quiet)
TEST_VALUES = {
    "prometheusRule": {
        "enabled": True,
        "interval": "1s",
        "thresholds": {"sshDrops": 0},
        "for": {
            name: FOR
            for name in (
                "ProxmigratePVEAPIUnreachable",
                "ProxmigratePVECredentialsBroken",
                "ProxmigrateClusterNotReady",
                "ProxmigrateDrainBlocked",
                "ProxmigrateNoActiveReplica",
                "ProxmigrateOperatorDown",
                "ProxmigratePVEAPIErrors",
                "ProxmigratePVEAPIAuthErrors",
            )
        },
    }
}

_namespaces = itertools.count()


@pytest.fixture
def namespace() -> str:
    return f"e2e-prom-{next(_namespaces)}"


def prometheus_binary() -> Path:
    """The pinned server from hack/provision.py's table (built once into the cache)."""
    return tool("prometheus")


class Prometheus:
    """A Prometheus server on loopback scraping one target every second."""

    def __init__(self, workdir: Path, target: str, rules: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
        (workdir / "prometheus.yaml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(workdir / "rules.yaml")],
                    "scrape_configs": [
                        {"job_name": "proxmigrate", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        argv = [
            str(prometheus_binary()),
            f"--config.file={workdir / 'prometheus.yaml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, interval=0.2, message=f"Prometheus ready\n{self.tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:  # 400: not valid PromQL, with Prometheus' why
            body = json.loads(error.read())
        assert body["status"] == "success", f"{params}: {body}"
        return body["data"]

    def alerts(self) -> dict[str, set[str]]:
        """alertname -> the states of its active alerts (pending, firing)."""
        states: dict[str, set[str]] = {}
        for alert in self.api("alerts")["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    def tail(self) -> str:
        return tail_file(self.log, 20)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class AlertWatch:
    """Every state each alert has been seen in, polled from Prometheus."""

    def __init__(self, prometheus: Prometheus, rules: dict[str, Any]) -> None:
        self.prometheus = prometheus
        self.seen: dict[str, set[str]] = {}
        self.waits = {r["alert"]: "for" in r for g in rules["groups"] for r in g["rules"]}

    def poll(self) -> dict[str, set[str]]:
        now = self.prometheus.alerts()
        for name, states in now.items():
            self.seen.setdefault(name, set()).update(states)
        return now

    def until_firing(self, name: str, timeout: float, what: str) -> None:
        wait_for(
            lambda: "firing" in self.poll().get(name, set()),
            timeout=timeout,
            interval=0.25,
            message=f"{name} firing ({what}); active: {self.prometheus.alerts()}",
        )
        if self.waits[name]:  # an alert with `for:` is pending first
            assert "pending" in self.seen[name], f"{name} fired without going pending first"

    def quiet(self, *names: str) -> None:
        active = self.poll()
        loud = {name: active[name] for name in names if name in active}
        assert not loud, f"alerts that do not name the cause are active: {loud}"


def cluster() -> dict[str, Any]:
    """pve1: six small guests to drain onto pve2, whose sshd drops beyond one pre-auth
    connection; pve3 holds a guest too big for any other node (its drain is blocked); a
    VMPlacement keeps guest 300 on pve2."""
    guests = [
        {"vmid": 100 + i, "node": "pve1", "memory_gib": 1, "used_gib": 0.5, "dirty_mib_s": 5}
        for i in range(6)
    ]
    guests.append({"vmid": 200, "node": "pve3", "memory_gib": 100, "used_gib": 10})
    guests.append({"vmid": 300, "node": "pve2", "memory_gib": 1, "tags": ["pinned"]})
    return {
        "nodes": [
            {"name": "pve1", "memory_gib": 64, "cpus": 16},
            {"name": "pve2", "memory_gib": 64, "cpus": 16, "max_startups": "1:100:1"},
            {"name": "pve3", "memory_gib": 160, "cpus": 16},
        ],
        "vms": guests,
    }


def nodedrain(name: str, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "proxmigrate.dev/v1alpha1",
        "kind": "NodeDrain",
        "metadata": {"name": name},
        "spec": {"clusterRef": {"name": "lab"}, "nodeName": node_name},
    }


def dashboard_queries(cluster_label: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, with Grafana's variables filled
    (the cluster label has no regex metacharacters but `.`, which matches itself too)."""
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "1m")
                yield panel["title"], expr.replace("$cluster", cluster_label)
            yield from walk(panel.get("panels", []))

    return list(walk(dashboard["panels"]))


def test_alerts_and_dashboard_on_a_live_operator(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(TEST_VALUES))
    rules = only(render(values), "PrometheusRule")["spec"]
    api = control_plane.api_client()
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster()))
    # two endpoints: the ProxmoxCluster knows the first only, faults reach pvesim on the second
    sim_args = ("--config", str(config), "--seed", "1", "--time-scale", str(TIME_SCALE))
    with PvesimProcess(*sim_args, "--endpoints", "2") as sim:
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{operator.metrics_port}", rules)
        try:
            watch = AlertWatch(prometheus, rules)
            create_cluster_for_pvesim(
                api, namespace, "lab", sim, scaled_policy(), sync_interval_seconds=5
            )
            assert wait_cluster_decided(api, namespace, operator)["status"] == "True"
            # Prometheus has scraped the operator (its discovery starts scraping after a few
            # seconds) and pve2's drop counter at 0, so the first drop is an increase
            drops = (
                f'proxmigrate_ssh_drops_total{{target="pve2",proxmox_cluster="{namespace}/lab"}}'
            )
            wait_for(
                lambda: prometheus.api("query", query=f"{drops} == 0")["result"],
                timeout=30,
                interval=0.25,
                message=f"Prometheus to scrape {drops} at 0\n{prometheus.tail()}",
            )
            wait_for(lambda: "ProxmigrateOperatorDown" not in watch.poll(), timeout=10)
            placement = {
                "apiVersion": "proxmigrate.dev/v1alpha1",
                "kind": "VMPlacement",
                "metadata": {"name": "pinned"},
                "spec": {
                    "clusterRef": {"name": "lab"},
                    "selector": {"tags": ["pinned"]},
                    "nodes": ["pve2"],
                },
            }
            create(api, namespace, "vmplacements", placement)
            create(api, namespace, "nodedrains", nodedrain("stuck", "pve3"))
            # sshd on pve2 refuses pve1 for a while (PerSourcePenalties): the first moves are
            # dropped at their first connection and retried (the later ones may be dropped
            # at any step, by MaxStartups 1:100:1)
            sim.fault(ssh_penalty_node="pve2", ssh_penalty_source="pve1", ssh_penalty_seconds=20)
            create(api, namespace, "nodedrains", nodedrain("drain", "pve1"))

            # sshd drops into pve2 and a blocked drain: each fires its own alert
            watch.until_firing("ProxmigrateSSHDrops", 60, "sshd on pve2 drops")
            watch.until_firing("ProxmigrateDrainBlocked", 30, "pve3 does not fit elsewhere")
            blocked = [
                a["labels"]
                for a in prometheus.api("alerts")["alerts"]
                if a["labels"]["alertname"] == "ProxmigrateDrainBlocked"
            ]
            assert blocked == [
                {
                    "alertname": "ProxmigrateDrainBlocked",
                    "severity": "warning",
                    "proxmox_cluster": f"{namespace}/lab",
                    "pve_node": "pve3",
                    "nodedrain": f"{namespace}/stuck",
                    "reason": "InsufficientCapacity",
                }
            ]
            watch.quiet(
                "ProxmigratePVEAPIUnreachable",
                "ProxmigratePVECredentialsBroken",
                "ProxmigrateNoActiveReplica",
                "ProxmigrateOperatorDown",
            )
            wait_for(
                lambda: (
                    get(api, namespace, "nodedrains", "drain")["status"].get("phase") == "Drained"
                ),
                timeout=60,
                message=f"the drain of pve1 to end\n{operator.tail()}",
            )
            time.sleep(2)  # two more scrapes: in-flight back to 0

            # every dashboard query is valid PromQL and returns series
            empty = []
            for title, expr in dashboard_queries(f"{namespace}/lab"):
                if not prometheus.api("query", query=expr)["result"]:
                    empty.append(f"{title}: {expr}")
            assert not empty, "dashboard queries without series:\n" + "\n".join(empty)
            clusters = prometheus.api(
                "label/proxmox_cluster/values", **{"match[]": "proxmigrate_cluster_ready"}
            )
            assert clusters == [f"{namespace}/lab"]  # the dashboard's cluster variable
            in_flight = prometheus.api("query", query="sum(proxmigrate_migrations_in_flight)")
            assert float(in_flight["result"][0]["value"][1]) == 0

            # a PVE API outage: its alert, and no replica or credentials alert
            sim.fault(endpoint_down=0)
            watch.until_firing(
                "ProxmigratePVEAPIUnreachable", 30, "the ProxmoxCluster's endpoint is down"
            )
            watch.quiet(
                "ProxmigrateNoActiveReplica",
                "ProxmigratePVECredentialsBroken",
                "ProxmigrateClusterNotReady",
                "ProxmigratePVEAPIErrors",
                "ProxmigrateOperatorDown",
            )
            sim.fault(endpoint_up=0)
            wait_for(
                lambda: "ProxmigratePVEAPIUnreachable" not in watch.poll(),
                timeout=30,
                message="the outage alert to resolve",
            )

            # a broken token: the credentials alert, not the outage one
            secret = {"data": {"tokenSecret": base64.b64encode(b"wrong").decode()}}
            client.CoreV1Api(api).patch_namespaced_secret("lab-token", namespace, secret)
            watch.until_firing("ProxmigratePVECredentialsBroken", 30, "PVE refuses the token")
            watch.quiet("ProxmigratePVEAPIUnreachable", "ProxmigrateNoActiveReplica")
        except BaseException:
            print(prometheus.tail())
            targets = prometheus.api("targets")["activeTargets"]
            print("scrapes:", [(t["health"], t.get("lastError")) for t in targets])
            print("up:", prometheus.api("query", query="count_over_time(up[10m])")["result"])
            raise
        finally:
            prometheus.stop()
    print(f"Prometheus alert test took {time.monotonic() - began:.1f} s")
