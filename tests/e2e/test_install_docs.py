"""docs/install.md works as written: its "Install the chart" commands, run in order against a
real control plane with the chart's RBAC (the operator as a process holding only the chart's
ServiceAccount token, as tests/e2e/test_chart_apiserver.py does) and pvesim as the PVE
cluster, end with a Ready ProxmoxCluster and a dry-run plan.

The commands are read from the document, not copied: a step this test does not know fails
it, so the document cannot drift from what is tested. The values a reader fills in (token,
CA file, endpoints, placeholders in the example) are pvesim's.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from pvesim.testing import PvesimProcess
from tests.e2e.chart_env import apply, render, server_version, service_account_kubeconfig
from tests.e2e.operator_env import get, wait_cluster_decided
from tests.e2e.test_chart_apiserver import RBAC_KINDS
from tests.e2e.test_operator_drains import node, start_sim, vm
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.devenv import OperatorProcess, ensure_namespace, wait_for

INSTALL = REPO_ROOT / "docs" / "install.md"
SECTION = "## 3. Install the chart"


def commands(section: str) -> Iterator[list[str]]:
    """The shell commands of every ```sh block in `section` of docs/install.md, as argv."""
    text = INSTALL.read_text()
    start = text.index(section)
    body = text[start : text.find("\n## ", start + len(section))]
    for block in re.findall(r"```sh\n(.*?)```", body, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                yield argv


@dataclass
class Reader:
    """Someone following the document with pvesim as their PVE cluster."""

    control_plane: ControlPlane
    sim: PvesimProcess
    tmp_path: Path
    namespace: str = ""
    chart: list[dict[str, Any]] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)

    @property
    def admin(self) -> Any:
        return self.control_plane.api_client()

    def value(self, text: str) -> str:
        """What the reader types for a placeholder: pvesim's token secret and CA file."""
        return text.replace("$PVE_TOKEN_SECRET", self.sim.token_secret).replace(
            "pve-root-ca.pem", self.sim.ca_cert
        )

    def run(self, argv: list[str]) -> None:
        match argv:
            case ["kubectl", "create", "namespace", namespace]:
                self.namespace = namespace
                ensure_namespace(self.admin, namespace)
            case ["kubectl", "-n", namespace, "create", "secret", "generic", name, *sources]:
                self.create_secret(namespace, name, sources)
            case ["helm", "install", release, chart, "-n", namespace, *options]:
                assert (REPO_ROOT / chart).is_dir(), chart
                version = server_version(self.admin)
                options = [self.value(option) for option in options]
                self.chart = render(version, namespace, release=release, options=tuple(options))
                for manifest in self.chart:
                    if manifest["kind"] in RBAC_KINDS | {"KopfPeering", "Secret"}:
                        apply(self.admin, manifest)
            case ["kubectl", "-n", namespace, "apply", "-f", path]:
                for document in yaml.safe_load_all((REPO_ROOT / path).read_text()):
                    document = self.edited(document)
                    document["metadata"]["namespace"] = namespace
                    apply(self.admin, document)
                    self.applied.append(document)
            case ["kubectl", "-n", _, "get", *_]:
                pass  # what the reader looks at; the test checks it below
            case _:
                raise AssertionError(f"docs/install.md runs a step this test does not know: {argv}")

    def create_secret(self, namespace: str, name: str, sources: list[str]) -> None:
        data = {}
        for source in sources:
            kind, _, assignment = source.partition("=")
            key, _, value = assignment.partition("=")
            if kind == "--from-literal":
                # the reader's own token id, as pvesim issued it
                data[key] = self.sim.token_id if key == "tokenId" else self.value(value)
            else:
                assert kind == "--from-file", source
                data[key] = Path(self.value(value)).read_text()
        body = {
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        client.CoreV1Api(self.admin).create_namespaced_secret(namespace, body)

    def edited(self, document: dict[str, Any]) -> dict[str, Any]:
        """The example as the reader edits it: pvesim's endpoint; a Secret's placeholders
        (older examples carried their own Secrets) filled with pvesim's token and CA."""
        if document["kind"] == "ProxmoxCluster":
            document["spec"]["endpoints"] = [f"{self.sim.host}:{self.sim.port}"]
        if document["kind"] == "Secret":
            fill = {
                "tokenId": self.sim.token_id,
                "tokenSecret": self.sim.token_secret,
                "ca.crt": Path(self.sim.ca_cert).read_text(),
            }
            document["stringData"] = {k: fill.get(k, v) for k, v in document["stringData"].items()}
        return document

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return dict(get(self.admin, self.namespace, plural, name).get("status") or {})

    def of_kind(self, kind: str) -> dict[str, Any]:
        (found,) = [m for m in self.chart if m["kind"] == kind]
        return found


def test_the_install_guide_ends_with_a_ready_cluster_and_a_plan(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    config = {
        "nodes": [node("pve1", 64), node("pve2", 64), node("pve3", 64)],
        "vms": [vm(100, "pve1", 2), vm(101, "pve1", 4)],
    }
    with start_sim(tmp_path, config) as sim:
        reader = Reader(control_plane, sim, tmp_path)
        steps = list(commands(SECTION))
        helm = next(i for i, argv in enumerate(steps) if argv[:2] == ["helm", "install"])
        for argv in steps[: helm + 1]:
            reader.run(argv)
        account = reader.of_kind("ServiceAccount")["metadata"]["name"]
        peering = reader.of_kind("KopfPeering")["metadata"]["name"]
        kubeconfig = service_account_kubeconfig(
            control_plane, reader.namespace, account, tmp_path / "kubeconfig"
        )
        log = tmp_path / "operator.log"
        with OperatorProcess(
            kubeconfig, log, namespace=reader.namespace, peering=peering
        ) as operator:
            for argv in steps[helm + 1 :]:
                reader.run(argv)
            (cluster,) = [d for d in reader.applied if d["kind"] == "ProxmoxCluster"]
            name = cluster["metadata"]["name"]
            ready = wait_cluster_decided(
                control_plane.api_client(), reader.namespace, operator, name
            )
            assert ready["status"] == "True", ready
            (drain,) = [d for d in reader.applied if d["kind"] == "NodeDrain"]
            plan = wait_for(
                lambda: reader.status("nodedrains", drain["metadata"]["name"]).get("plan"),
                timeout=30,
                message=f"the dry run's plan\n{operator.tail()}",
            )

    assert sorted(entry["vmid"] for entry in plan["entries"]) == [100, 101]
