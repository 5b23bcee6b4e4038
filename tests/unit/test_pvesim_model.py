"""The pvesim model on virtual time: sshd rule, link sharing, PVE's failure wording."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from pvesim.model import ApiError, Cluster, MaxStartups, drop_probability, from_config, should_drop
from pvesim.model.sshd import Sshd


def _cluster(
    nodes: int = 3,
    vms: list[dict[str, Any]] | None = None,
    *,
    seed: int = 1,
    nic_gbit: float = 10.0,
    max_startups: str | None = None,
    datacenter: dict[str, Any] | None = None,
) -> Cluster:
    node_specs: list[dict[str, Any]] = [
        {"name": f"pve{i}", "memory_gib": 1024, "nic_gbit": nic_gbit} for i in range(1, nodes + 1)
    ]
    if max_startups:
        node_specs[-1]["max_startups"] = max_startups
    config = {"nodes": node_specs, "vms": vms or [], "datacenter": datacenter or {}}
    return from_config(config, seed=seed)


def _idle_logins(cluster: Cluster) -> Cluster:
    """Logins as quick as on an idle node (about 0.3 s), not the loaded 2-core VM the default
    sshd model is fitted to: for tests of what PVE does within a time limit."""
    for node in cluster.nodes.values():
        node.sshd.params = replace(node.sshd.params, handshake_median=0.2, client_start_max=0.05)
    return cluster


def _vms(count: int, node: str = "pve1", first: int = 100, **spec: Any) -> list[dict[str, Any]]:
    base = {"memory_gib": 1, "used_gib": 0.5, "dirty_mib_s": 0} | spec
    return [base | {"vmid": first + i, "node": node} for i in range(count)]


def _log(cluster: Cluster, upid: str) -> list[str]:
    return cluster.tasks[upid].lines


@pytest.mark.parametrize(
    ("pending", "expected"),
    [(0, 0.0), (9, 0.0), (10, 0.30), (11, 0.30), (20, 0.37), (55, 0.65), (99, 0.99), (100, 1.0)],
)
def test_drop_probability_matches_sshd_formula(pending: int, expected: float) -> None:
    assert drop_probability(pending, MaxStartups()) == pytest.approx(expected)


@pytest.mark.parametrize("pending", [10, 30, 60, 90])
def test_sampled_drop_rate_matches_probability(pending: int) -> None:
    rng = random.Random(pending)
    limits = MaxStartups()
    samples = 4000
    drops = sum(should_drop(pending, limits, rng) for _ in range(samples))
    assert drops / samples == pytest.approx(drop_probability(pending, limits), abs=0.03)


def test_sshd_counts_and_peak() -> None:
    sshd = Sshd(from_config({"nodes": [{"name": "a"}]}).nodes["a"].sshd.params)
    rng = random.Random(0)
    admitted = sum(sshd.admit("10.0.0.1", 0.0, rng) for _ in range(10))
    assert admitted == 10 and sshd.peak_pending == 10 and sshd.drops == 0
    assert MaxStartups.parse("10:30:60") == MaxStartups(10, 30, 60)


def _transfer_seconds(cluster: Cluster, vmid: int) -> float:
    record = cluster.migrations[vmid][-1]
    assert record.outcome == "ok" and record.transfer_start and record.transfer_end
    return record.transfer_end - record.transfer_start


def test_two_streams_over_one_link_take_twice_as_long() -> None:
    vms = _vms(2, memory_gib=16, used_gib=12)
    alone = _cluster(nic_gbit=1.0, vms=vms)
    alone.migrate("pve1", 100, "pve2", online=True)
    alone.run_until_idle()
    shared = _cluster(nic_gbit=1.0, vms=vms)
    shared.migrate("pve1", 100, "pve2", online=True)
    shared.migrate("pve1", 101, "pve3", online=True)  # both leave through pve1's NIC
    shared.run_until_idle()
    one = _transfer_seconds(alone, 100)
    assert one == pytest.approx(12 * 2**30 / (1e9 / 8 * 0.94), rel=0.05)
    both = max(_transfer_seconds(shared, 100), _transfer_seconds(shared, 101))
    assert both / one == pytest.approx(2.0, rel=0.1)


def test_secure_stream_is_capped_by_one_cipher_core() -> None:
    cluster = _cluster(vms=_vms(1, memory_gib=8, used_gib=8))
    cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.run_until_idle()
    assert _transfer_seconds(cluster, 100) == pytest.approx(8.0, rel=0.05)  # 8 GiB at 1 GiB/s


def test_burst_of_32_secure_migrations_gets_sshd_drops() -> None:
    vms = [v for n in range(1, 5) for v in _vms(8, node=f"pve{n}", first=100 * n)]
    cluster = _cluster(nodes=5, vms=vms)
    upids = [cluster.migrate(v["node"], v["vmid"], "pve5", online=True) for v in vms]
    cluster.run_until_idle()
    failed = [u for u in upids if cluster.tasks[u].exitstatus != "OK"]
    assert failed, "32 handshakes at once must exceed MaxStartups 10:30:100"
    assert len(failed) < 32
    for upid in failed:
        lines = "\n".join(_log(cluster, upid))
        assert "kex_exchange_identification: " in lines
        assert cluster.tasks[upid].exitstatus in ("migration aborted", "migration problems")
        if cluster.tasks[upid].exitstatus == "migration aborted":
            assert "Can't connect to destination address using public key" in lines
    state = cluster.ground_truth()
    assert state["ssh"]["pve5"]["drops"] >= len(failed)
    assert state["ssh"]["pve5"]["peak_preauth"] >= 10


def test_six_spaced_migrations_get_no_drops() -> None:
    cluster = _cluster(vms=_vms(6))
    upids = []
    for i in range(6):
        upids.append(cluster.migrate("pve1", 100 + i, "pve2", online=True))
        cluster.advance_to(cluster.now + 5.0)
    cluster.run_until_idle()
    assert [cluster.tasks[u].exitstatus for u in upids] == ["OK"] * 6
    assert cluster.ground_truth()["ssh"]["pve2"]["drops"] == 0


def test_sixty_insecure_migrations_exhaust_ports() -> None:
    vms = [v for n in range(1, 4) for v in _vms(20, node=f"pve{n}", first=100 * n)]
    cluster = _cluster(
        nodes=4, vms=vms, max_startups="200:30:300", datacenter={"migration": "type=insecure"}
    )
    # a big target whose handshakes do not slow down in a crowd: the `qm start`s come together
    pve4 = cluster.nodes["pve4"].sshd
    pve4.params = replace(pve4.params, handshake_contention=float("inf"), client_start_max=0.0)
    upids = [cluster.migrate(v["node"], v["vmid"], "pve4", online=True) for v in vms]
    cluster.run_until_idle()
    wording = "[pve4] unable to find free port (60000-60050)"
    exhausted = [u for u in upids if any(wording in x for x in _log(cluster, u))]
    assert 1 <= len(exhausted) <= 10  # 50 ports, reservations last 5 s
    failure = "ERROR: online migrate failure - remote command failed with exit code 255"
    assert any(failure in x for x in _log(cluster, exhausted[0]))
    assert cluster.tasks[exhausted[0]].exitstatus == "migration problems"
    reasons = {r.reason for recs in cluster.migrations.values() for r in recs}
    assert "port_exhausted" in reasons


def test_migrateall_throttles_by_worker_count_and_reports_like_pve() -> None:
    vms = [*_vms(6), {"vmid": 106, "node": "pve1", "memory_gib": 1, "local_devices": ["hostpci0"]}]
    cluster = _cluster(vms=vms)
    upid = cluster.migrateall("pve1", "pve2", maxworkers=2)
    cluster.run_until_idle()
    lines = _log(cluster, upid)
    assert lines[-2:] == ["All jobs finished, used 6 workers in total.", "TASK OK"]
    # pve-manager API2/Nodes.pm $create_migrate_worker: `Check VM N: ` has no newline
    assert "Check VM 106: skip VM 106 - precondition check failed:" in lines
    assert "  Has local resources: hostpci0" in lines
    assert lines[:2] == ["Check VM 100: precondition check passed", "Migrating VM 100"]
    assert cluster.peak_inflight == 2
    assert sorted(v.vmid for v in cluster.vms.values() if v.node == "pve2") == list(range(100, 106))


def test_migrateall_needs_a_worker_count() -> None:
    cluster = _cluster(vms=_vms(1))
    with pytest.raises(ApiError, match="maxworkers"):
        cluster.migrateall("pve1", "pve2")


def test_ha_guest_gets_hamigrate_then_crm_lrm_run_qmigrate() -> None:
    cluster = _cluster(vms=_vms(1, ha=True))
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    assert ":hamigrate:100:" in upid
    cluster.advance_to(cluster.now + 1.0)
    assert cluster.tasks[upid].exitstatus == "OK"
    assert cluster.vms[100].node == "pve1"  # hamigrate ends before the move
    cluster.run_until_idle()
    child = [t for t in cluster.tasks.values() if t.upid.type == "qmigrate"]
    assert len(child) == 1 and child[0].upid.user == "root@pam"
    assert child[0].lines[0].endswith("task started by HA resource agent")
    assert child[0].exitstatus == "OK" and cluster.vms[100].node == "pve2"


def _drop_nth_connection(cluster: Cluster, node: str, nth: int) -> None:
    """Make the target's sshd drop exactly its `nth` connection."""
    sshd = cluster.nodes[node].sshd
    original = sshd.admit
    calls = {"n": 0}

    def admit(source: str, now: float, rng: random.Random) -> bool:
        calls["n"] += 1
        if calls["n"] == nth:
            sshd.connections += 1
            sshd.drops += 1
            return False
        return original(source, now, rng)

    sshd.admit = admit  # type: ignore[method-assign]


def test_drop_of_qm_unlock_leaves_vm_on_target_locked() -> None:
    cluster = _cluster(vms=_vms(1))
    _drop_nth_connection(cluster, "pve2", 5)  # /bin/true, qm start, mtunnel, rm -f, qm unlock
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.run_until_idle()
    lines = _log(cluster, upid)
    assert any("ERROR: failed to clear migrate lock: Connection " in x for x in lines)
    assert cluster.tasks[upid].exitstatus == "migration problems"
    assert cluster.vms[100].node == "pve2" and cluster.vms[100].lock == "migrate"
    with pytest.raises(ApiError, match=r"VM is locked \(migrate\)"):
        cluster.migrate("pve2", 100, "pve1", online=True)


def test_drop_of_qm_start_aborts_phase2_with_pve_wording() -> None:
    cluster = _cluster(vms=_vms(1))
    _drop_nth_connection(cluster, "pve2", 2)
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.run_until_idle()
    text = [x.split(" ", 2)[-1] for x in _log(cluster, upid)]
    i = text.index("ERROR: online migrate failure - remote command failed with exit code 255")
    assert text[i - 2].startswith("[pve2] kex_exchange_identification: ")
    assert text[i + 1 : i + 3] == ["aborting phase 2 - cleanup resources", "migrate_cancel"]
    assert cluster.vms[100].node == "pve1" and cluster.vms[100].lock is None


def test_stopping_a_running_migration_keeps_vm_on_source() -> None:
    cluster = _idle_logins(_cluster(vms=_vms(1, memory_gib=64, used_gib=60)))
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.advance_to(cluster.now + 20)
    cluster.stop_task(upid)
    cluster.run_until_idle()
    assert cluster.tasks[upid].exitstatus == "migration problems"
    assert cluster.vms[100].node == "pve1" and cluster.vms[100].lock is None
    assert cluster.migrations[100][0].reason == "stopped"


def test_api_preconditions_create_no_task() -> None:
    cluster = _cluster(vms=_vms(1) + _vms(1, first=101, lock="backup"))
    with pytest.raises(ApiError) as local:
        cluster.migrate("pve1", 100, "pve1", online=True)
    assert local.value.status == 400 and local.value.errors == {"target": "target is local node."}
    with pytest.raises(ApiError, match="can't migrate running VM without --online"):
        cluster.migrate("pve1", 100, "pve2")
    with pytest.raises(ApiError, match=r"VM is locked \(backup\)"):
        cluster.migrate("pve1", 101, "pve2", online=True)
    with pytest.raises(ApiError) as token:
        cluster.migrate(
            "pve1", 100, "pve2", online=True, user="root@pam!x", migration_type="secure"
        )
    assert token.value.errors == {"migration_type": "Only root may use this option."}
    assert cluster.tasks == {}


def test_offline_migration_of_stopped_vm() -> None:
    cluster = _cluster(vms=_vms(1, running=False))
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.run_until_idle()
    # qemu-server API2/Qemu.pm migrate_vm warns this before fork_worker: not in the task log
    assert not any("Doing offline migration instead" in x for x in _log(cluster, upid))
    assert cluster.tasks[upid].exitstatus == "OK" and cluster.vms[100].node == "pve2"


def test_same_seed_same_outcome() -> None:
    def run() -> dict[str, Any]:
        vms = [v for n in range(1, 4) for v in _vms(10, node=f"pve{n}", first=100 * n)]
        cluster = _cluster(nodes=4, vms=vms, seed=7)
        for v in vms:
            cluster.migrate(v["node"], v["vmid"], "pve4", online=True)
        cluster.run_until_idle()
        return cluster.ground_truth()

    assert run() == run()


def test_ha_loops_progress_at_wall_clock_epochs() -> None:
    """Regression: at ~1.7e9 s a 1e-9 tick margin vanished and the HA loop never advanced."""
    from dataclasses import replace as _replace

    from pvesim.model import ModelParams, generate

    params = _replace(ModelParams(), start_time=1_795_000_000.123)
    cluster = generate(3, 6, seed=3, params=params)
    ha_vms = [vm for vm in cluster.vms.values() if vm.node == "pve1"][:6]
    for vm in ha_vms:
        vm.ha_state = "started"
        cluster.ha.request(f"vm:{vm.vmid}", "pve2")
    cluster.run_until_idle(limit=3600)
    assert cluster.now < params.start_time + 3600
    assert all(cluster.vms[vm.vmid].node == "pve2" for vm in ha_vms)
