"""pvesim answers the corpus situations with real PVE's shapes and wording.

For every case that names a `pvesim` situation, pvesim plays it (tests/conformance/simulated.py)
and its answer must match the real one: the same keys and JSON types for API answers, the same
decisive log lines in the same order (times, PIDs, IPs, names normalised), the same exit
status. The real answers and their sources are in `cases/*.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from pvesim.model import ApiError
from pvesim.model.upid import Upid
from tests.conformance import corpus, simulated

TASKS = corpus.having(corpus.load("tasks.yaml"), "pvesim")
LOGS = corpus.having(corpus.load("task_logs.yaml"), "pvesim")
OPTIONS = corpus.having(corpus.load("options.yaml"), "pvesim")
PRECONDITIONS = corpus.having(corpus.load("preconditions.yaml"), "pvesim")
API = corpus.load("api.yaml")
RESOURCES = corpus.having(corpus.load("resources.yaml"), "pvesim")
MIGRATEALL = corpus.load("migrateall.yaml")
REFUSALS = corpus.having(API["refusals"], "pvesim")
UPIDS = [case for case in corpus.load("upids.yaml")["upids"] if not case.get("must_fail")]


def _ids(cases: list[Mapping[str, Any]]) -> list[str]:
    return [str(case["id"]) for case in cases]


@pytest.mark.parametrize("case", UPIDS, ids=_ids(UPIDS))
def test_upid_encodes_like_pve(case: Mapping[str, Any]) -> None:
    assert str(Upid(**case["out"])) == case["in"]


@pytest.mark.parametrize("case", TASKS, ids=_ids(TASKS))
def test_task_rows_have_pves_shape(case: Mapping[str, Any]) -> None:
    real = case["answer"]
    situation = case["pvesim"]
    sim = simulated.task_answer(situation["situation"], situation["user"], case["endpoint"])
    assert corpus.shape(sim) == corpus.shape(real)
    assert sim["status"] == real["status"]  # RUNNING, running/stopped, or the exit status
    if "exitstatus" in real:
        assert sim["exitstatus"] == real["exitstatus"]
    # a token's task: the full token id in `user`, or `user` and `tokenid` split
    assert ("!" in str(sim["user"])) == ("!" in str(real["user"]))


@pytest.mark.parametrize("case", LOGS, ids=_ids(LOGS))
def test_task_log_has_pves_wording(case: Mapping[str, Any]) -> None:
    sim, upid = simulated.migration_task(case["pvesim"])
    log = simulated.task_log(sim, upid)
    assert corpus.missing_in_order(log, corpus.lines(case.get("decisive"))) == [], log
    assert corpus.present(log, corpus.lines(case.get("absent"))) == [], log
    task = sim.tasks[upid]
    assert task.exitstatus == corpus.read_status(log[-1])  # what PVE::UPID::read_status gives
    if case["from"] == "code":  # public captures are from other setups (names, versions)
        assert corpus.normalised(str(task.exitstatus)) == corpus.normalised(case["exitstatus"])


@pytest.mark.parametrize("case", OPTIONS, ids=_ids(OPTIONS))
def test_cluster_options_have_pves_shape(case: Mapping[str, Any]) -> None:
    situation = case["pvesim"]
    sim = simulated.cluster(situation)
    user = simulated.USERS.get(situation["user"], situation["user"])
    answer = dict(simulated.api(sim, "GET", "cluster/options", user))
    real = case["answer"]
    assert corpus.shape(answer) == corpus.shape(real)
    for key in ("migration", "bwlimit", "mac_prefix"):
        if key in real:
            assert answer[key] == real[key], key


@pytest.mark.parametrize("case", PRECONDITIONS, ids=_ids(PRECONDITIONS))
def test_migration_precondition_has_pves_shape(case: Mapping[str, Any]) -> None:
    sim = simulated.cluster(case["pvesim"])
    path = f"nodes/{simulated.SOURCE}/qemu/{simulated.VMID}/migrate"
    answer = dict(simulated.api(sim, "GET", path))
    real = case["answer"]
    assert corpus.shape(answer) == corpus.shape(real)
    assert answer["running"] == real["running"]
    assert sorted(answer["allowed_nodes"]) == sorted(real["allowed_nodes"])
    assert {n: corpus.shape(e) for n, e in answer["not_allowed_nodes"].items()} == {
        n: corpus.shape(e) for n, e in real["not_allowed_nodes"].items()
    }
    assert [corpus.shape(d) for d in answer["local_disks"]] == [
        corpus.shape(d) for d in real["local_disks"]
    ]
    assert answer["local_resources"] == real["local_resources"]


@pytest.mark.parametrize("case", REFUSALS, ids=_ids(REFUSALS))
def test_migration_refusals_as_pve(case: Mapping[str, Any]) -> None:
    situation = case["pvesim"]
    sim = simulated.cluster(situation)
    path = f"nodes/{simulated.SOURCE}/qemu/{simulated.VMID}/migrate"
    user = simulated.USERS[situation["user"]]
    with pytest.raises(ApiError) as refused:
        simulated.api(sim, "POST", path, user, **situation["params"])
    real = case["answer"]
    assert refused.value.status == real["status"]
    assert refused.value.message.rstrip("\n") == real["message"].rstrip("\n")
    assert refused.value.errors == real.get("errors")
    assert sim.tasks == {}  # no task is created


@pytest.mark.parametrize("case", API["ha_migrate_answers"], ids=_ids(API["ha_migrate_answers"]))
def test_ha_migrate_answer_as_pve(case: Mapping[str, Any]) -> None:
    sim = simulated.cluster(case["pvesim"] | {"ha": True})
    path = f"cluster/ha/resources/vm:{simulated.VMID}/migrate"
    assert simulated.api(sim, "POST", path, node=simulated.TARGET) == case["answer"]


@pytest.mark.parametrize("case", RESOURCES, ids=_ids(RESOURCES))
def test_resource_rows_have_pves_shape(case: Mapping[str, Any]) -> None:
    situation = case["pvesim"]
    sim = simulated.cluster(situation)
    user = simulated.USERS.get(situation.get("user", "root"), situation.get("user"))
    rows = simulated.api(sim, "GET", "cluster/resources", str(user))
    real = case["answer"]
    (row,) = [dict(r) for r in rows if r.get("id") == real["id"]]
    assert corpus.shape(row) == corpus.shape(real)
    for key in ("id", "type", "status", "hastate", "lock", "tags", "pool"):
        assert row.get(key) == real.get(key), key


@pytest.mark.parametrize("case", MIGRATEALL, ids=_ids(MIGRATEALL))
def test_migrateall_log_as_pve(case: Mapping[str, Any]) -> None:
    """Raw lines without times or addresses: the whole log must be PVE's."""
    situation = case["pvesim"]
    sim = simulated.cluster(situation)
    path = f"nodes/{simulated.SOURCE}/migrateall"
    upid = str(simulated.api(sim, "POST", path, **situation["params"]))
    sim.run_until_idle()
    assert simulated.task_log(sim, upid) == corpus.lines(case["log"])
