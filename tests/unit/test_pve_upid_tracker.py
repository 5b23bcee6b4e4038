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
            {"upid": ok.upid, "status": "OK", "endtime": 1100},
            {"upid": failed.upid, "status": "migration problems", "endtime": 1050},
        ],
        "pve2": [{"upid": active.upid}],
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

    waiting = evaluate([request], {"pve3": [{"upid": request.upid, "status": "OK"}], "pve1": []})
    assert waiting.handoffs == (HaHandoff(request, None),)

    lists = {
        "pve3": [{"upid": request.upid, "status": "OK"}],
        "pve1": [{"upid": earlier, "status": "OK"}, {"upid": other_vm}, {"upid": child}],
    }
    result = evaluate([request], lists)
    assert result.handoffs == (HaHandoff(request, TrackedTask(120, child, "pve1")),)
    assert result.finished == ()


def test_failed_ha_request_is_a_normal_failure() -> None:
    request = TrackedTask(120, upid("pve3", "hamigrate", 120, 2000), source="pve1")
    result = evaluate([request], {"pve3": [{"upid": request.upid, "status": "no such node"}]})
    assert [end.exitstatus for end in result.failed] == ["no such node"]


def test_poll_since_covers_the_oldest_task() -> None:
    tasks = [TrackedTask(1, upid("pve1", "qmigrate", 1, 3000)), TrackedTask(2, QMIGRATE)]
    assert poll_since(tasks) == 3000  # QMIGRATE started in 2025, long after epoch 3000
    assert poll_since([]) is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"status": "running"}, None),
        ({}, None),
        ({"status": "stopped", "exitstatus": "WARNINGS: 1"}, "WARNINGS: 1"),
        ({"status": "migration aborted", "endtime": 5}, "migration aborted"),
        ({"status": "stopped"}, "unknown"),
    ],
)
def test_task_exitstatus(entry: dict[str, object], expected: str | None) -> None:
    assert task_exitstatus(entry) == expected


def test_transfer_seconds_left_reads_the_last_progress_line() -> None:
    from proxmigrate.pve.tracker import transfer_progress

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
