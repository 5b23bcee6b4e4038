"""pvesim's HA path against pve-ha-manager and qemu-server: what the API answers, what the CRM
and LRM do with a request, and where a refusal shows (nowhere but `hastate` and syslog)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from pvesim import views
from pvesim.api import router
from pvesim.model import ROOT, ApiError, Cluster, from_config
from pvesim.model.tasklog import Task


def _cluster(vms: list[dict[str, Any]], *, pve_version: int = 8, **datacenter: Any) -> Cluster:
    nodes = [{"name": f"pve{i}", "memory_gib": 1024} for i in (1, 2, 3)]
    config = {"pve_version": pve_version, "nodes": nodes, "vms": vms, "datacenter": datacenter}
    return from_config(config, seed=1)


def _vms(count: int, ha: Any = True, **spec: Any) -> list[dict[str, Any]]:
    base = {"memory_gib": 1, "used_gib": 0.5, "dirty_mib_s": 0, "node": "pve1", "ha": ha}
    return [base | spec | {"vmid": 100 + i} for i in range(count)]


def _qmigrates(cluster: Cluster) -> list[Task]:
    return sorted(
        (t for t in cluster.tasks.values() if t.upid.type == "qmigrate"),
        key=lambda t: t.starttime,
    )


def _hastate(cluster: Cluster, vmid: int) -> str | None:
    rows = views.cluster_resources(cluster, "vm")
    return next(row for row in rows if row["vmid"] == vmid).get("hastate")


@pytest.mark.parametrize("pve_version", [8, 9])
def test_qemu_migrate_of_an_ha_guest_answers_a_hamigrate_upid(pve_version: int) -> None:
    cluster = _cluster(_vms(1), pve_version=pve_version)
    path = "nodes/pve1/qemu/100/migrate"
    upid = router.dispatch(cluster, "POST", path, ROOT, {"target": "pve2", "online": "1"})
    assert ":hamigrate:100:" in upid
    cluster.advance_to(cluster.now + 2)
    assert cluster.tasks[upid].lines == [
        "Requesting HA migration for VM 100 to node pve2",  # a `print`: no timestamp
        "TASK OK",
    ]


def test_check_lock_refuses_a_locked_ha_guest_before_the_ha_branch() -> None:
    cluster = _cluster(_vms(1, lock="backup"))
    with pytest.raises(ApiError, match=r"VM is locked \(backup\)"):
        cluster.migrate("pve1", 100, "pve2", online=True)
    assert cluster.tasks == {}


def test_force_does_not_skip_check_lock() -> None:
    cluster = _cluster(_vms(1, ha=False, lock="backup"))
    with pytest.raises(ApiError, match=r"VM is locked \(backup\)"):
        cluster.migrate("pve1", 100, "pve2", online=True, force=True)


def test_ignored_guest_migrates_directly_and_shows_its_hastate() -> None:
    cluster = _cluster(_vms(1, ha="ignored"))
    assert _hastate(cluster, 100) == "ignored"
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    assert ":qmigrate:100:" in upid
    cluster.run_until_idle()
    assert cluster.tasks[upid].exitstatus == "OK" and cluster.vms[100].node == "pve2"
    with pytest.raises(ApiError, match=r"^resource 'vm:100' is not HA managed$"):
        path = "cluster/ha/resources/vm:100/migrate"
        router.dispatch(cluster, "POST", path, ROOT, {"node": "pve3"})
    (service,) = [e for e in cluster.ha.status_current() if e["type"] == "service"]
    assert service["state"] == "ignored" and "crm_state" not in service


def test_ha_endpoint_answers_null_on_pve8_and_the_motion_info_on_pve9() -> None:
    for version, answer in ((8, None), (9, {"sid": "vm:100", "requested-node": "pve2"})):
        cluster = _cluster(_vms(1), pve_version=version)
        path = "cluster/ha/resources/vm:100/migrate"
        assert router.dispatch(cluster, "POST", path, ROOT, {"node": "pve2"}) == answer


def test_crm_drops_a_request_for_an_offline_target_without_any_task() -> None:
    cluster = _cluster(_vms(1))
    cluster.set_node_online("pve3", False)
    upid = cluster.migrate("pve1", 100, "pve3", online=True)
    cluster.run_until_idle()
    assert cluster.tasks[upid].exitstatus == "OK"  # the request was queued, nothing more
    assert _qmigrates(cluster) == []
    assert _hastate(cluster, 100) == "started" and cluster.vms[100].node == "pve1"
    assert any(
        "crm command error - node not online: migrate vm:100 pve3" in line
        for line in cluster.ha.journal
    )


def test_lrm_refusal_creates_no_task_and_the_crm_reverts_the_state() -> None:
    cluster = _cluster(_vms(1))
    cluster.migrate("pve1", 100, "pve2", online=True)
    while _hastate(cluster, 100) != "migrate":  # the CRM accepted it; the LRM has not run yet
        next_event = cluster.next_event_time()
        assert next_event is not None
        cluster.advance_to(next_event)
    assert _qmigrates(cluster) == []
    cluster.set_lock(100, "backup")  # a backup starts before the LRM's worker
    cluster.run_until_idle()
    assert _qmigrates(cluster) == []
    assert _hastate(cluster, 100) == "started" and cluster.vms[100].node == "pve1"
    journal = "\n".join(cluster.ha.journal)
    assert "VM is locked (backup)" in journal
    assert "service 'vm:100' - migration failed (exit code 255)" in journal


def test_ha_migration_runs_as_the_ha_agent_with_local_disks() -> None:
    disks = [{"key": "scsi0", "storage": "local-lvm", "size_gib": 8}]
    cluster = _cluster(_vms(1, disks=disks))
    cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.run_until_idle()
    (task,) = _qmigrates(cluster)
    assert task.lines[0] == "task started by HA resource agent"  # raw, before the worker
    assert task.upid.user == ROOT
    assert task.exitstatus == "OK" and cluster.vms[100].node == "pve2"


@pytest.mark.parametrize(("max_workers", "expected"), [(None, 4), (2, 2)])
def test_lrm_runs_at_most_max_workers_from_datacenter_cfg(
    max_workers: int | None, expected: int
) -> None:
    datacenter = {"max_workers": max_workers} if max_workers else {}
    cluster = _cluster(_vms(8, used_gib=4, dirty_mib_s=0), **datacenter)
    for vmid in range(100, 108):
        cluster.migrate("pve1", vmid, "pve2", online=True)
    cluster.run_until_idle()
    tasks = _qmigrates(cluster)
    assert len(tasks) == 8 and all(t.exitstatus == "OK" for t in tasks)
    peak = max(
        sum(1 for t in tasks if t.starttime <= at < (t.endtime or 0)) for at in _starts(tasks)
    )
    assert peak == expected


def test_lrm_refills_a_freed_slot_within_its_worker_poll() -> None:
    cluster = _cluster(_vms(6, used_gib=2), max_workers=1)
    for vmid in range(100, 106):
        cluster.migrate("pve1", vmid, "pve2", online=True)
    cluster.run_until_idle()
    tasks = _qmigrates(cluster)
    assert len(tasks) == 6
    gaps = [after.starttime - (before.endtime or 0) for before, after in pairwise(tasks)]
    # one at a time; run_workers polls every second for 8 s of each 10 s round: 3 s at worst
    assert min(gaps) >= 0 and max(gaps) <= 3.0 + 1e-6, gaps


def _starts(tasks: list[Task]) -> list[float]:
    return [t.starttime for t in tasks]


def test_a_service_accepted_while_the_lrm_runs_workers_starts_in_its_next_round() -> None:
    cluster = _cluster(_vms(2, used_gib=8))
    cluster.migrate("pve1", 100, "pve2", online=True)
    while not _qmigrates(cluster):
        next_event = cluster.next_event_time()
        assert next_event is not None
        cluster.advance_to(next_event)
    cluster.migrate("pve1", 101, "pve2", online=True)  # the LRM is in run_workers for 100
    cluster.run_until_idle()
    assert [t.upid.id for t in _qmigrates(cluster)] == ["100", "101"]
    assert {cluster.vms[100].node, cluster.vms[101].node} == {"pve2"}
