"""pvesim's task lists, task logs and task stops answer as PVE's code does.

Sources: pve-manager `PVE/API2/Tasks.pm` (node_tasks, read_task_log, read_task_status,
stop_task), pve-common `src/PVE/Tools.pm` (dump_logfile), `src/PVE/UPID.pm` (decode,
read_status, normalize_status_type), `src/PVE/INotify.pm` (read_active_workers),
`src/PVE/RESTEnvironment.pm` (fork_worker, check_worker, kill_process_group),
pve-guest-common `src/PVE/AbstractMigrate.pm` (migrate, $eval_int), qemu-server
`src/PVE/QemuMigrate.pm` (phase2_cleanup, phase3_cleanup).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from proxmigrate.pve.classifier import Reason, classify
from pvesim.api import router
from pvesim.auth import TOKEN_ID
from pvesim.model import ApiError, Cluster, ModelParams, TimingParams, from_config
from pvesim.model.process import SshCall
from pvesim.routing import Pending, TotalList
from tests.unit.test_pvesim_model import _idle_logins, _vms


def _cluster(vms: list[dict[str, Any]], **timing: float) -> Cluster:
    config = {
        "nodes": [{"name": f"pve{i}", "memory_gib": 1024} for i in (1, 2, 3)],
        "vms": vms,
        "datacenter": {"max_workers": 4},
    }
    params = ModelParams(timing=replace(TimingParams(), **timing))
    return from_config(config, seed=1, params=params)


def _get(cluster: Cluster, path: str, **params: Any) -> Any:
    return router.dispatch(cluster, "GET", path, TOKEN_ID, {k: str(v) for k, v in params.items()})


def _run_until(cluster: Cluster, done: Any) -> None:
    while not done():
        due = cluster.next_event_time()
        assert due is not None, "the model went idle first"
        cluster.advance_to(due)


def _three_migrations() -> tuple[Cluster, list[str]]:
    """100 (small) ends first, 101 and 102 (large) keep running."""
    vms = [
        *_vms(1, used_gib=0.5),
        *_vms(2, first=101, memory_gib=64, used_gib=60),
    ]
    cluster = _cluster(vms)
    upids = []
    for vmid in (100, 101, 102):
        upids.append(cluster.migrate("pve1", vmid, "pve2", online=True, user=TOKEN_ID))
        cluster.advance_to(cluster.now + 1)
    _run_until(cluster, lambda: not cluster.tasks[upids[0]].running)
    return cluster, upids


def test_running_tasks_come_first_as_RUNNING_then_the_archive_last_ended_first() -> None:
    cluster, upids = _three_migrations()
    rows = _get(cluster, "nodes/pve1/tasks", source="all")
    assert [r["upid"] for r in rows] == [upids[1], upids[2], upids[0]]
    running = rows[0]
    # INotify.pm read_active_workers: `saved` 0; Tasks.pm: `status` RUNNING, no token split
    assert running["status"] == "RUNNING" and running["saved"] == "0"
    assert running["user"] == TOKEN_ID and "tokenid" not in running and "endtime" not in running
    ended = rows[2]
    assert ended["status"] == "OK" and ended["endtime"] >= ended["starttime"]
    assert (ended["user"], ended["tokenid"]) == ("root@pam", "pvesim")  # $convert_token_task
    assert [r["upid"] for r in _get(cluster, "nodes/pve1/tasks")] == [upids[0]]  # archive
    assert [r["upid"] for r in _get(cluster, "nodes/pve1/tasks", source="active")] == upids[1:]


def test_the_status_answer_splits_a_token_owner() -> None:
    cluster, upids = _three_migrations()
    status = _get(cluster, f"nodes/pve1/tasks/{upids[1]}/status")
    assert status["status"] == "running" and "exitstatus" not in status
    assert (status["user"], status["tokenid"]) == ("root@pam", "pvesim")


def test_userfilter_is_a_case_insensitive_match_on_the_listed_user() -> None:
    cluster, upids = _three_migrations()
    upper = _get(cluster, "nodes/pve1/tasks", source="all", userfilter="ROOT@PAM")
    assert [r["upid"] for r in upper] == [upids[1], upids[2], upids[0]]
    # running rows keep `root@pam!pvesim`, archived ones are split: the token name only
    # matches the running ones
    token = _get(cluster, "nodes/pve1/tasks", source="all", userfilter="PVESIM")
    assert [r["upid"] for r in token] == upids[1:]


def test_errors_keeps_running_tasks_and_statusfilter_selects_types() -> None:
    cluster, upids = _three_migrations()
    cluster.set_lock(101, "backup")  # not refused: the task runs already
    errors = _get(cluster, "nodes/pve1/tasks", source="all", errors=1)
    assert [r["upid"] for r in errors] == upids[1:]  # running = `unknown`, only `ok` drops
    ok = _get(cluster, "nodes/pve1/tasks", source="all", statusfilter="OK")
    assert [r["upid"] for r in ok] == [upids[0]]
    unknown = _get(cluster, "nodes/pve1/tasks", source="all", statusfilter="unknown,warning")
    assert [r["upid"] for r in unknown] == upids[1:]
    both = _get(cluster, "nodes/pve1/tasks", source="all", errors=1, statusfilter="ok")
    assert [r["upid"] for r in both] == upids[1:]  # `errors` wins


def test_start_and_limit_page_after_filtering_and_total_counts_every_match() -> None:
    cluster, upids = _three_migrations()
    page = _get(cluster, "nodes/pve1/tasks", source="all", start=1, limit=1)
    assert isinstance(page, TotalList) and page.total == 3
    assert [r["upid"] for r in page] == [upids[2]]
    assert _get(cluster, "nodes/pve1/tasks", source="all", limit=0).total == 3


def test_task_log_reads_to_the_end_with_limit_0_and_says_no_content_when_empty() -> None:
    cluster = _cluster(_vms(1, memory_gib=64, used_gib=60))  # a progress line a second
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    empty = _get(cluster, f"nodes/pve1/tasks/{upid}/log")
    assert list(empty) == [{"n": 1, "t": "no content"}] and empty.total == 1
    cluster.run_until_idle()
    lines = cluster.tasks[upid].lines
    assert len(lines) > 50
    page = _get(cluster, f"nodes/pve1/tasks/{upid}/log")
    assert len(page) == 50 and page.total == len(lines)  # default limit 50
    everything = _get(cluster, f"nodes/pve1/tasks/{upid}/log", start=2, limit=0)
    assert [row["t"] for row in everything] == lines[2:]
    assert everything[0]["n"] == 3 and everything.total == len(lines)


def test_unknown_and_unparsable_upids_answer_as_tasks_pm() -> None:
    cluster = _cluster(_vms(1))
    missing = "UPID:pve1:00009999:00004000:67748580:qmigrate:100:root@pam:"
    with pytest.raises(ApiError) as bad:
        _get(cluster, "nodes/pve1/tasks/UPID:nonsense/status")
    assert (bad.value.status, bad.value.errors) == (400, {"upid": "unable to parse worker upid"})
    with pytest.raises(ApiError) as gone:
        _get(cluster, f"nodes/pve1/tasks/{missing}/status")
    assert (gone.value.status, gone.value.errors) == (400, {"upid": "no such task"})
    # read_task_log has no -f check: dump_logfile reports the missing file as a line
    log = _get(cluster, f"nodes/pve1/tasks/{missing}/log")
    assert list(log) == [{"n": 1, "t": "unable to open file - No such file or directory"}]


def _transferring(cluster: Cluster) -> str:
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.advance_to(cluster.now + 20)
    assert cluster.migrations[100][0].transfer_start is not None
    return upid


def _texts(cluster: Cluster, upid: str) -> list[str]:
    """Log lines without their timestamp."""
    return [line[20:] if line[:2] == "20" else line for line in cluster.tasks[upid].lines]


def test_stop_during_the_transfer_cleans_up_within_the_grace_and_answers_then() -> None:
    cluster = _idle_logins(_cluster(_vms(1, memory_gib=64, used_gib=60), qm_start_max=2.0))
    upid = _transferring(cluster)
    asked = cluster.now
    answer = router.dispatch(cluster, "DELETE", f"nodes/pve1/tasks/{upid}", TOKEN_ID, {})
    assert isinstance(answer, Pending) and not answer.ready()  # the DELETE blocks
    _run_until(cluster, answer.ready)
    assert cluster.now - asked < 5  # `qm stop` over ssh: a login, then 1-2 s: no SIGKILL
    task, record = cluster.tasks[upid], cluster.migrations[100][0]
    assert not task.running and task.exitstatus == "migration problems"
    text = _texts(cluster, upid)
    i = text.index("ERROR: online migrate failure - interrupted by signal")
    assert text[i + 1 : i + 3] == ["aborting phase 2 - cleanup resources", "migrate_cancel"]
    assert text[-2].startswith("ERROR: migration finished with problems")
    assert cluster.vms[100].node == "pve1" and cluster.vms[100].lock is None
    assert record.reason == "stopped" and not record.target_qemu_left
    failure = classify(str(task.exitstatus), task.lines, "pve2")  # the operator's reading
    assert failure is not None and failure.reason is Reason.CANCELLED and not failure.vm_moved


def test_sigkill_after_5_s_cuts_the_cleanup_short() -> None:
    """`qm stop` of the incoming QEMU takes longer than kill_process_group waits."""
    cluster = _cluster(_vms(1, memory_gib=64, used_gib=60), qm_start_min=8, qm_start_max=9)
    upid = _transferring(cluster)
    asked = cluster.now
    stopping = cluster.stop_task(upid)
    _run_until(cluster, lambda: stopping.answered)
    assert cluster.now - asked == pytest.approx(5.0)
    task, record = cluster.tasks[upid], cluster.migrations[100][0]
    assert task.exitstatus == "unexpected status"  # UPID.pm read_status: no TASK line
    assert not task.lines[-1].startswith("TASK ")
    assert task.lines[-1].endswith("migrate_cancel")
    assert record.outcome == "killed" and record.target_qemu_left  # the orphaned QEMU
    assert cluster.vms[100].node == "pve1" and cluster.vms[100].lock is None  # unlocked first
    assert not cluster.vms[100].migrating  # the migration flock died with the process
    row = next(r for r in _get(cluster, "nodes/pve1/tasks") if r["upid"] == upid)
    assert row["status"] == "unexpected status"
    cluster.run_until_idle()  # the killed worker never wakes up again
    assert task.exitstatus == "unexpected status"


def test_stop_during_the_final_qm_unlock_leaves_the_moved_vm_locked() -> None:
    """phase3_cleanup runs under AbstractMigrate's delayed handler: only the ssh child dies."""
    cluster = _cluster(_vms(1, used_gib=0.5))
    upid = cluster.migrate("pve1", 100, "pve2", online=True)

    def unlocking() -> bool:
        process = cluster.tasks[upid].process
        waiting = process.waiting if process is not None else None
        return isinstance(waiting, SshCall) and waiting.command == "qm unlock 100"

    _run_until(cluster, unlocking)
    cluster.stop_task(upid)
    cluster.run_until_idle()
    text = _texts(cluster, upid)
    i = text.index("ERROR: received interrupt - delayed")
    assert text[i + 1].startswith("# /usr/bin/ssh -e none -o 'BatchMode=yes'")
    assert text[i + 1].endswith(" qm unlock 100")
    assert text[i + 2] == "ERROR: failed to clear migrate lock: got signal 15"
    assert cluster.tasks[upid].exitstatus == "migration problems"
    assert cluster.vms[100].node == "pve2" and cluster.vms[100].lock == "migrate"


def test_stopping_migrateall_stops_only_its_own_worker() -> None:
    """Each migration runs in its own session (fork_worker: setsid): not in the group."""
    cluster = _cluster(_vms(3, memory_gib=64, used_gib=60))
    upid = cluster.migrateall("pve1", "pve2", maxworkers=2)
    cluster.advance_to(cluster.now + 10)
    cluster.stop_task(upid)
    cluster.run_until_idle()
    assert cluster.tasks[upid].exitstatus == "received interrupt"
    assert cluster.tasks[upid].lines[-1] == "TASK ERROR: received interrupt"
    moved = sorted(v.vmid for v in cluster.vms.values() if v.node == "pve2")
    assert moved == [100, 101]  # the two started go on, the third never starts
