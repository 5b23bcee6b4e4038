"""UPID round trips, batched task tracking, and the end-of-transfer detector."""

from __future__ import annotations

import pytest

from proxmigrate.pve.tracker import (
    HaHandoff,
    TrackedTask,
    evaluate,
    nodes_to_poll,
    poll_since,
    task_exitstatus,
)
from proxmigrate.pve.upid import Upid, format_upid, is_upid, parse_upid

QMIGRATE = "UPID:pve1:0000A1B2:0012F4C8:67C2E0A0:qmigrate:120:root@pam!operator:"


def upid(node: str, kind: str, vmid: int, start: int, pid: int = 0x1000) -> str:
    return format_upid(Upid(node, pid, 0x12F4C8, start, kind, str(vmid), "root@pam"))


def row(text: str, status: str = "RUNNING", endtime: int | None = None) -> dict[str, object]:
    """A `GET /nodes/{node}/tasks` row as pve-manager `PVE/API2/Tasks.pm` `node_tasks` builds
    it: the UPID's fields (pve-common `PVE/UPID.pm` `decode`; a token's user split into
    `user` and `tokenid` by `$convert_token_task`); a task of the active list
    without an end gets `saved` (pve-common `PVE/INotify.pm` `read_active_workers`) and
    `status: "RUNNING"`; an ended one (index line `UPID endtime status`) `endtime` and its
    exit status."""
    parsed = parse_upid(text)
    entry: dict[str, object] = {
        "upid": text,
        "node": parsed.node,
        "pid": parsed.pid,
        "pstart": parsed.pstart,
        "starttime": parsed.starttime,
        "type": parsed.type,
        "id": parsed.id,
        "user": parsed.user.partition("!")[0],
        "status": status,
    }
    if "!" in parsed.user:
        entry["tokenid"] = parsed.user.partition("!")[2]
    if endtime is None:
        entry["saved"] = "0"
    else:
        entry["endtime"] = endtime
    return entry


def test_parse_upid_fields() -> None:
    parsed = parse_upid(QMIGRATE)
    assert parsed == Upid(
        "pve1", 0xA1B2, 0x12F4C8, 0x67C2E0A0, "qmigrate", "120", "root@pam!operator"
    )
    assert parsed.vmid == 120
    assert str(parsed) == QMIGRATE


def test_nine_digit_pstart_round_trips() -> None:
    text = "UPID:node-2.example:00001234:1A2B3C4D5:67C2E0A0:hamigrate:vm:120:root@pam:"
    with pytest.raises(ValueError):
        parse_upid(text)  # `vm:120` would be two fields: PVE's id for hamigrate is `120`
    text = "UPID:node-2:00001234:1A2B3C4D5:67C2E0A0:hamigrate:120:root@pam:"
    assert format_upid(parse_upid(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "UPID:pve1:0000A1B2:0012F4C8:67C2E0A0:qmigrate:120:root@pam",  # no trailing colon
        "UPID:pve1:A1B2:0012F4C8:67C2E0A0:qmigrate:120:root@pam:",  # short pid
        "upid:pve1:0000A1B2:0012F4C8:67C2E0A0:qmigrate:120:root@pam:",
    ],
)
def test_invalid_upids_are_rejected(text: str) -> None:
    assert not is_upid(text)
    with pytest.raises(ValueError):
        parse_upid(text)


def test_evaluate_sorts_one_batch() -> None:
    ok = TrackedTask(101, upid("pve1", "qmigrate", 101, 1000))
    failed = TrackedTask(102, upid("pve1", "qmigrate", 102, 1001))
    active = TrackedTask(103, upid("pve2", "qmigrate", 103, 1002))
    missing = TrackedTask(104, upid("pve2", "qmigrate", 104, 1003))
    not_polled = TrackedTask(105, upid("pve3", "qmigrate", 105, 1004))
    lists = {
        "pve1": [
            row(ok.upid, "OK", endtime=1100),
            row(failed.upid, "migration problems", endtime=1050),
        ],
        "pve2": [row(active.upid)],
    }
    result = evaluate([ok, failed, active, missing, not_polled], lists)
    assert [(end.task.vmid, end.succeeded, end.endtime) for end in result.finished] == [
        (101, True, 1100),
        (102, False, 1050),
    ]
    assert [end.task.vmid for end in result.failed] == [102]
    assert [task.vmid for task in result.running] == [103, 105]
    assert [task.vmid for task in result.unseen] == [104]
    assert result.handoffs == ()


def test_ha_request_hands_off_to_its_qmigrate_child() -> None:
    request = TrackedTask(120, upid("pve3", "hamigrate", 120, 2000), source="pve1")
    earlier = upid("pve1", "qmigrate", 120, 1500)
    child = upid("pve1", "qmigrate", 120, 2012, pid=0x2000)
    other_vm = upid("pve1", "qmigrate", 121, 2005)
    assert nodes_to_poll([request]) == {"pve3", "pve1"}

    ended = row(request.upid, "OK", endtime=2001)
    waiting = evaluate([request], {"pve3": [ended], "pve1": []})
    assert waiting.handoffs == (HaHandoff(request, None),)

    lists = {
        "pve3": [ended],
        "pve1": [row(child), row(other_vm), row(earlier, "OK", endtime=1600)],
    }
    result = evaluate([request], lists)
    assert result.handoffs == (HaHandoff(request, TrackedTask(120, child, "pve1")),)
    assert result.finished == ()


def test_failed_ha_request_is_a_normal_failure() -> None:
    request = TrackedTask(120, upid("pve3", "hamigrate", 120, 2000), source="pve1")
    result = evaluate([request], {"pve3": [row(request.upid, "no such node", endtime=2001)]})
    assert [end.exitstatus for end in result.failed] == ["no such node"]


def test_poll_since_covers_the_oldest_task() -> None:
    tasks = [TrackedTask(1, upid("pve1", "qmigrate", 1, 3000)), TrackedTask(2, QMIGRATE)]
    assert poll_since(tasks) == 3000  # QMIGRATE started in 2025, long after epoch 3000
    assert poll_since([]) is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        # task list rows (pve-manager `PVE/API2/Tasks.pm` `node_tasks`)
        (row(QMIGRATE), None),
        (row(QMIGRATE, "OK", endtime=0x67C2E0F0), "OK"),
        (row(QMIGRATE, "WARNINGS: 1", endtime=0x67C2E0F0), "WARNINGS: 1"),
        (row(QMIGRATE, "migration aborted", endtime=0x67C2E0F0), "migration aborted"),
        # an index line without a status: PVE itself counts it `unknown`
        ({**row(QMIGRATE, endtime=0x67C2E0F0), "status": None}, "unknown"),
        # task status answers (`read_task_status`: `running` or `stopped` + `exitstatus`)
        ({"upid": QMIGRATE, "status": "running"}, None),
        ({"upid": QMIGRATE, "status": "stopped", "exitstatus": "OK"}, "OK"),
        ({"upid": QMIGRATE, "status": "stopped", "exitstatus": "migration problems"},
         "migration problems"),
        ({"upid": QMIGRATE, "status": "stopped"}, "unknown"),
        # no PVE shape: not a failure, still running
        ({"upid": QMIGRATE}, None),
        ({"upid": QMIGRATE, "status": "migration aborted"}, None),
    ],
)  # fmt: skip
def test_task_exitstatus(entry: dict[str, object], expected: str | None) -> None:
    assert task_exitstatus(entry) == expected


def test_running_rows_are_running_not_failed() -> None:
    active = TrackedTask(120, QMIGRATE)
    result = evaluate([active], {"pve1": [row(QMIGRATE)]})
    assert result.running == (active,)
    assert result.finished == ()


def test_an_unknown_entry_shape_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert task_exitstatus({"upid": QMIGRATE, "status": "queued"}) is None
    assert "unrecognised task entry" in caplog.text


def test_transfer_seconds_left_reads_the_last_progress_line() -> None:
    from proxmigrate.pve.task_log import transfer_progress

    def transfer_seconds_left(lines: list[str]) -> float | None:
        progress = transfer_progress(lines)
        return progress.seconds_left if progress is not None else None

    lines = [
        "00:00:01 migration active, transferred 512.0 MiB of 8.0 GiB VM-state, 1.0 GiB/s",
        "00:00:02 migration active, transferred 2.0 GiB of 8.0 GiB VM-state, 512.0 MiB/s",
    ]
    assert transfer_seconds_left(lines) == 12.0
    assert transfer_seconds_left([*lines, "2026-01-01 00:00:09 migration status: completed"]) == 0
    assert transfer_seconds_left(["2026-01-01 00:00:00 start remote tunnel"]) is None
