"""pvesim over HTTPS through the real proxmoxer client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from pvesim.testing import PvesimProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sim() -> Iterator[PvesimProcess]:
    with PvesimProcess(
        "--nodes", "3", "--vms-per-node", "6", "--time-scale", "20", "--seed", "3"
    ) as s:
        yield s


def token_api(sim: PvesimProcess) -> ProxmoxAPI:
    """proxmoxer on `sim` with its API token (shared with the ProxLB tests)."""
    return ProxmoxAPI(
        sim.host,
        port=sim.port,
        user=sim.token_user,
        token_name=sim.token_name,
        token_value=sim.token_secret,
        verify_ssl=sim.ca_cert,
    )


def _ticket_api(sim: PvesimProcess) -> ProxmoxAPI:
    return ProxmoxAPI(
        sim.host, port=sim.port, user="root@pam", password=sim.password, verify_ssl=sim.ca_cert
    )


def _movable_vm(api: ProxmoxAPI, node: str) -> int:
    ha = {r["sid"] for r in api.cluster.ha.resources.get()}
    for vm in api.nodes(node).qemu.get():
        if vm["status"] != "running" or f"vm:{vm['vmid']}" in ha or vm.get("lock"):
            continue
        check = api.nodes(node).qemu(vm["vmid"]).migrate.get()
        if not check["local_disks"] and not check["local_resources"]:
            return int(vm["vmid"])
    raise AssertionError("generated cluster has no plain running VM")


def _wait(api: ProxmoxAPI, node: str, upid: str, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            return dict(status)
        time.sleep(0.1)
    raise AssertionError(f"task {upid} still running")


def test_auth_both_ways_and_inventory(sim: PvesimProcess) -> None:
    for api in (token_api(sim), _ticket_api(sim)):
        assert api.version.get()["release"] == "8.4"
        nodes = api.nodes.get()
        assert sorted(n["node"] for n in nodes) == ["pve1", "pve2", "pve3"]
        vms = api.cluster.resources.get(type="vm")
        assert len(vms) == 18 and min(v["vmid"] for v in vms) == 100
        assert all(v["type"] == "qemu" for v in vms)
    bad = ProxmoxAPI(
        sim.host,
        port=sim.port,
        user="root@pam",
        token_name="pvesim",
        token_value="wrong",
        verify_ssl=sim.ca_cert,
    )
    with pytest.raises(ResourceException) as denied:
        bad.nodes.get()
    assert denied.value.status_code == 401


def test_live_migration_ends_task_ok_with_pve_log_order(sim: PvesimProcess) -> None:
    api = token_api(sim)
    vmid = _movable_vm(api, "pve1")
    upid = api.nodes("pve1").qemu(vmid).migrate.post(target="pve2", online=1)
    assert upid.startswith("UPID:pve1:") and ":qmigrate:" in upid
    assert _wait(api, "pve1", upid)["exitstatus"] == "OK"
    lines = [row["t"] for row in api.nodes("pve1").tasks(upid).log.get(limit=500)]
    expected = [
        f"starting migration of VM {vmid} to node 'pve2'",
        f"starting VM {vmid} on remote node 'pve2'",
        "start remote tunnel",
        "ssh tunnel ver 1",
        f"starting online/live migration on unix:/run/qemu-server/{vmid}.migrate",
        "set migration capabilities",
        "migration downtime limit: 100 ms",
        "migration cachesize: ",
        "set migration parameters",
        f"start migrate command to unix:/run/qemu-server/{vmid}.migrate",
        "average migration speed: ",
        "migration completed, transferred ",
        "migration status: completed",
        "migration finished successfully (duration ",
    ]
    messages = [line[20:] for line in lines[:-1]]
    positions = [next(i for i, m in enumerate(messages) if m.startswith(e)) for e in expected]
    assert positions == sorted(positions)
    assert lines[-1] == "TASK OK"
    assert sim.state()["placement"][str(vmid)] == "pve2"
    qmstart = api.nodes("pve2").tasks.get(typefilter="qmstart", vmid=vmid)
    assert len(qmstart) == 1


def test_parameter_errors_and_root_only_rule(sim: PvesimProcess) -> None:
    api = token_api(sim)
    vmid = _movable_vm(api, "pve3")
    with pytest.raises(ResourceException) as unknown:
        api.nodes("pve3").qemu(vmid).migrate.post(target="pve1", online=1, bogus=1)
    assert unknown.value.status_code == 400 and "bogus" in unknown.value.errors
    with pytest.raises(ResourceException) as root_only:
        api.nodes("pve3").qemu(vmid).migrate.post(target="pve1", online=1, migration_type="secure")
    assert root_only.value.errors == {"migration_type": "Only root may use this option."}
    with pytest.raises(ResourceException) as local:
        api.nodes("pve3").qemu(vmid).migrate.post(target="pve3", online=1)
    assert local.value.errors == {"target": "target is local node."}
    root = _ticket_api(sim)
    upid = (
        root.nodes("pve3").qemu(vmid).migrate.post(target="pve1", online=1, migration_type="secure")
    )
    assert _wait(root, "pve3", upid)["exitstatus"] == "OK"
    counts = sim.state()["api_requests"]
    assert counts["POST /nodes/{node}/qemu/{vmid}/migrate"] >= 4


def test_running_task_listed_first_and_delete_answers_once_it_ended(sim: PvesimProcess) -> None:
    """pve-manager Tasks.pm node_tasks (`RUNNING` first) and stop_task, whose
    RESTEnvironment.pm kill_process_group returns only when the worker is gone."""
    api = token_api(sim)
    vmid = _movable_vm(api, "pve2")
    upid = api.nodes("pve2").qemu(vmid).migrate.post(target="pve3", online=1)
    rows = api.nodes("pve2").tasks.get(source="all")
    assert rows[0]["upid"] == upid and rows[0]["status"] == "RUNNING"
    api.nodes("pve2").tasks(upid).delete()
    status = api.nodes("pve2").tasks(upid).status.get()
    assert status["status"] == "stopped"
    # by the step the SIGTERM found: fork_worker's handler, prepare/phase 1, phase 2; or
    # SIGKILL (no end line: UPID.pm read_status's `unexpected status`) when the cleanup's
    # own ssh logins outlast kill_process_group's 5 s (sshd's handshake times are sampled)
    assert status["exitstatus"] in (
        "received interrupt",
        "migration aborted",
        "migration problems",
        "unexpected status",
    )
    assert sim.state()["placement"][str(vmid)] == "pve2"


def test_faults_node_offline_and_drift(sim: PvesimProcess) -> None:
    api = token_api(sim)
    sim.fault(node_offline="pve3")
    with pytest.raises(ResourceException) as offline:
        api.nodes("pve3").qemu.get()
    assert offline.value.status_code == 595
    sim.fault(node_online="pve3")
    vmid = _movable_vm(api, "pve1")
    sim.move_vm(vmid, "pve3")
    assert sim.state()["placement"][str(vmid)] == "pve3"
    assert any(m["vmid"] == vmid for m in sim.state()["manual_moves"])


def test_serve_prints_json_within_two_seconds_and_exits_cleanly() -> None:
    began = time.monotonic()
    process = PvesimProcess("--nodes", "2", "--vms-per-node", "2")
    with process:
        assert time.monotonic() - began < 2.0
        assert process.url.startswith("https://127.0.0.1:")
        proc = process.proc
        assert proc is not None
        workdir = Path(process.info["ca_cert"]).parent
        assert (workdir / "server.key").exists()
    assert proc.returncode == 0
    assert not workdir.exists()  # its private key and certificates went with it
