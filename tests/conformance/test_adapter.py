"""The PVE adapter reads real PVE answers and task logs as PVE means them.

Each case of `cases/*.yaml` is a real answer or log with its source; the adapter
(proxmigrate.pve: upid, tracker, task_log, classifier, ha_verdicts, resources, precondition)
must give the reading the case states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from proxmigrate.failures import Failure
from proxmigrate.pve.classifier import classify, classify_api_error, is_success
from proxmigrate.pve.ha_verdicts import classify_hamigrate
from proxmigrate.pve.resources import parse_inventory, parse_migration_settings
from proxmigrate.pve.task_log import first_clock, log_clock, transfer_progress, tunnel_up_clock
from proxmigrate.pve.tracker import TrackedTask, evaluate, task_exitstatus
from proxmigrate.pve.upid import format_upid, parse_upid
from tests.conformance import corpus

TASKS = corpus.load("tasks.yaml")
LOGS = corpus.load("task_logs.yaml")
OPTIONS = corpus.load("options.yaml")
PRECONDITIONS = corpus.load("preconditions.yaml")
UPIDS = corpus.load("upids.yaml")
API = corpus.load("api.yaml")
RESOURCES = corpus.load("resources.yaml")
MIGRATEALL = corpus.load("migrateall.yaml")


def _ids(cases: list[Mapping[str, Any]]) -> list[str]:
    return [str(case["id"]) for case in cases]


def test_every_case_names_its_source() -> None:
    cases = [
        *TASKS,
        *LOGS,
        *OPTIONS,
        *PRECONDITIONS,
        *UPIDS["upids"],
        *UPIDS["exit_statuses"],
        *API["refusals"],
        *API["ha_migrate_answers"],
        *RESOURCES,
        *MIGRATEALL,
    ]
    assert len({case["id"] for case in cases}) == len(cases), "case ids must be unique"
    for case in cases:
        sources = case["source"] if isinstance(case["source"], list) else [case["source"]]
        for source in sources:
            assert "url" in source or {"repo", "file", "sub", "version"} <= source.keys(), case


# -- UPIDs and exit statuses -------------------------------------------------------------------
@pytest.mark.parametrize("case", UPIDS["upids"], ids=_ids(UPIDS["upids"]))
def test_upid_decodes_and_encodes_like_pve(case: Mapping[str, Any]) -> None:
    if case.get("must_fail"):
        with pytest.raises(ValueError):
            parse_upid(case["in"])
        return
    upid = parse_upid(case["in"])
    fields = {k: getattr(upid, k) for k in ("node", "pid", "pstart", "starttime", "type", "id")}
    assert fields | {"user": upid.user} == case["out"]
    assert format_upid(upid) == case["in"]


@pytest.mark.parametrize("case", UPIDS["exit_statuses"], ids=_ids(UPIDS["exit_statuses"]))
def test_exit_status_success_reading(case: Mapping[str, Any]) -> None:
    assert corpus.read_status(case["last_line"]) == case["status"]
    assert is_success(case["status"]) is not case["error"]


# -- task lists and task status ----------------------------------------------------------------
@pytest.mark.parametrize("case", TASKS, ids=_ids(TASKS))
def test_tracker_reads_task_rows(case: Mapping[str, Any]) -> None:
    answer, expect = case["answer"], case["expect"]
    assert task_exitstatus(answer) == expect["exitstatus"]
    if "state" not in expect:
        return
    upid = parse_upid(answer["upid"])
    tracked = TrackedTask(int(answer["id"]), answer["upid"], upid.node)
    result = evaluate([tracked], {upid.node: [answer, *case.get("others", [])]})
    states = {
        "running": [t.upid for t in result.running],
        "succeeded": [e.task.upid for e in result.finished if e.succeeded],
        "failed": [e.task.upid for e in result.failed],
        "handoff": [h.request.upid for h in result.handoffs],
    }
    assert {state for state, upids in states.items() if answer["upid"] in upids} == {
        expect["state"]
    }
    if "child" in expect:
        (handoff,) = result.handoffs
        assert handoff.child is not None and handoff.child.upid == expect["child"]


# -- task logs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", LOGS, ids=_ids(LOGS))
def test_corpus_log_is_self_consistent(case: Mapping[str, Any]) -> None:
    """The transcription keeps what the case relies on: its decisive lines in order, its last
    line giving the exit status (pve-common UPID.pm read_status) unless it is an excerpt."""
    log = corpus.lines(case["log"])
    assert corpus.missing_in_order(log, corpus.lines(case.get("decisive"))) == []
    assert corpus.present(log, corpus.lines(case.get("absent"))) == []
    if log[-1].startswith("TASK "):
        assert corpus.read_status(log[-1]) == case["exitstatus"]


@pytest.mark.parametrize("case", LOGS, ids=_ids(LOGS))
def test_classifier_reads_task_logs(case: Mapping[str, Any]) -> None:
    expect = case["expect"]
    judge = classify_hamigrate if case.get("type") == "hamigrate" else classify
    failure = judge(case["exitstatus"], corpus.lines(case["log"]), case["target"])
    if expect.get("success"):
        assert failure is None
        if judge is classify:
            progress = transfer_progress(corpus.lines(case["log"]))
            assert progress is not None and progress.completed
        return
    assert failure is not None
    _assert_reading(failure, expect)


@pytest.mark.parametrize("case", LOGS, ids=_ids(LOGS))
def test_start_phase_read_from_the_logs_own_stamps(case: Mapping[str, Any]) -> None:
    """The tunnel's `ssh tunnel ver 1` line ends the start phase; its length is the distance
    between its stamp and the first line's (AbstractMigrate msg2text stamps every line)."""
    log = corpus.lines(case["log"])
    tunnel = [line for line in log if line.split(" ", 2)[-1] == "ssh tunnel ver 1"]
    up = tunnel_up_clock(log)
    if not tunnel:
        assert up is None
        return
    began = first_clock(log)
    assert up is not None and began is not None
    stamped = [line for line in log if log_clock(line) is not None]
    stamp = tunnel[0].split(" ")[1]  # HH:MM:SS, on the first stamped line's day in the corpus
    first = stamped[0].split(" ")[1]
    expected = sum(
        60**i * (int(b) - int(a))
        for i, (a, b) in enumerate(
            zip(reversed(first.split(":")), reversed(stamp.split(":")), strict=True)
        )
    )
    assert up - began == expected
    assert log_clock("kex_exchange_identification: Connection closed by remote host") is None


def _assert_reading(failure: Failure, expect: Mapping[str, Any]) -> None:
    if "reason" in expect:
        assert failure.reason == expect["reason"], failure.summary
    if "reason_not" in expect:
        assert failure.reason != expect["reason_not"], failure.summary
    for field in ("transient", "phase", "vm_moved", "lock"):
        if field in expect:
            assert getattr(failure, field) == expect[field], (field, failure.summary)


@pytest.mark.parametrize("case", API["refusals"], ids=_ids(API["refusals"]))
def test_api_refusals(case: Mapping[str, Any]) -> None:
    answer = case["answer"]
    failure = classify_api_error(answer["status"], answer["message"], answer.get("errors"))
    assert failure.phase == "api" and failure.vm_moved is False
    _assert_reading(failure, case["expect"])


# -- /cluster/resources ------------------------------------------------------------------------
READ_RESOURCES = corpus.having(RESOURCES, "expect")


@pytest.mark.parametrize("case", READ_RESOURCES, ids=_ids(READ_RESOURCES))
def test_inventory_reads_resource_rows(case: Mapping[str, Any]) -> None:
    inventory = parse_inventory([case["answer"]], taken_at=0.0)
    (entry,) = inventory.vms or inventory.nodes
    expect = dict(case["expect"])
    if "tags" in expect:
        assert entry.tags == frozenset(expect.pop("tags"))
    assert {key: getattr(entry, key) for key in expect} == expect


# -- /cluster/options --------------------------------------------------------------------------
@pytest.mark.parametrize("case", OPTIONS, ids=_ids(OPTIONS))
def test_migration_settings_from_options(case: Mapping[str, Any]) -> None:
    expect = case["expect"]
    if expect.get("unknown"):
        # A filtered answer says nothing about the transport: whatever form the adapter gives
        # that (an error, or settings that are neither secure nor insecure), never secure.
        try:
            settings = parse_migration_settings(case["answer"])
        except (ValueError, LookupError):
            return
        assert settings.type not in ("secure", "insecure"), settings
        assert not settings.secure
        return
    settings = parse_migration_settings(case["answer"])
    assert settings.type == expect["type"]
    assert settings.network == expect["network"]
    assert settings.bwlimit_kib == expect["bwlimit_kib"]


# -- migration preconditions -------------------------------------------------------------------
@pytest.mark.parametrize("case", PRECONDITIONS, ids=_ids(PRECONDITIONS))
def test_precondition_blockers(case: Mapping[str, Any]) -> None:
    from proxmigrate.pve.precondition import parse_precondition

    precondition = parse_precondition(case["answer"])
    for key, with_local_disks in (("blocked", False), ("blocked_with_local_disks", True)):
        reading = {
            target: bool(precondition.blockers(target, with_local_disks=with_local_disks))
            for target in case["expect"][key]
        }
        assert reading == case["expect"][key], key
