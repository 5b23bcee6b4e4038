"""VMMigration status documents: the mapping from what happened to what users read."""

from __future__ import annotations

from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.status import migration as vmstatus

T0 = 1_800_000_000.0
DROP = Failure(
    Reason.SSH_DROPPED, True, FailurePhase.PREPARE, "kex_exchange_identification: ...", False
)


def test_intent_is_written_before_the_post_and_upid_after() -> None:
    queued = vmstatus.queued({}, "pve1", T0, "queued")
    intent = vmstatus.merged(queued, vmstatus.start_requested(queued, "pve1", 1, T0 + 1))
    assert intent["phase"] == "Running"
    assert "upid" not in intent  # a restart finding this looks for the task before re-POSTing
    assert intent["attempts"] == [{"startTime": "2027-01-15T08:00:01Z", "outcome": "Running"}]
    running = vmstatus.merged(
        intent, vmstatus.started(intent, "UPID:pve1:1:2:3:qmigrate:100:u:", T0 + 2)
    )
    assert running["upid"] == running["attempts"][0]["upid"] == "UPID:pve1:1:2:3:qmigrate:100:u:"


def test_retry_closes_the_attempt_with_its_classified_reason() -> None:
    intent = vmstatus.start_requested({}, "pve1", 1, T0)
    retry = vmstatus.retrying(intent, T0 + 5, DROP, retry_at=T0 + 10, attempt=1)
    assert retry["phase"] == "Queued"
    assert retry["upid"] is None
    attempt = retry["attempts"][-1]
    assert (attempt["outcome"], attempt["reason"], attempt["transient"]) == (
        "Failed",
        "ssh_dropped",
        True,
    )
    assert attempt["decisiveLine"].startswith("kex_exchange_identification")
    assert retry["nextAttemptTime"] == "2027-01-15T08:00:10Z"
    ready = retry["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "Unknown", "Retrying")


def test_success_after_a_final_phase_drop_counts_as_moved_with_problems() -> None:
    unlock = Failure(
        Reason.SSH_DROPPED, True, FailurePhase.END, "failed to clear migrate lock", True, "migrate"
    )
    intent = vmstatus.start_requested({}, "pve1", 1, T0)
    done = vmstatus.merged(intent, vmstatus.succeeded(intent, T0 + 30, unlock, "lock cleared"))
    assert done["phase"] == "Succeeded"
    assert done["attempts"][-1]["outcome"] == "SucceededWithProblems"
    assert done["durationSeconds"] == 30.0
    assert done["conditions"][0]["status"] == "True"


def test_permanent_failure_and_cancel_are_terminal_with_reasons() -> None:
    intent = vmstatus.start_requested({}, "pve1", 2, T0)
    failed = vmstatus.failed(intent, T0 + 3, Reason.LOCAL_RESOURCES, "uses local devices: hostpci0")
    assert (failed["phase"], failed["reason"]) == ("Failed", "local_resources")
    assert failed["attempts"][-1]["outcome"] == "Failed"
    assert failed["conditions"][0]["status"] == "False"
    cancelled = vmstatus.cancelled(vmstatus.queued({}, "pve1", T0, "q"), T0 + 1, "cancelled")
    assert cancelled["phase"] == "Cancelled"
    assert "attempts" not in cancelled  # nothing was running


def test_transition_time_moves_only_when_status_changes() -> None:
    first = vmstatus.queued({}, "pve1", T0, "queued")
    later = vmstatus.merged(first, vmstatus.queued(first, "pve1", T0 + 60, "still queued"))
    assert (
        later["conditions"][0]["lastTransitionTime"] == first["conditions"][0]["lastTransitionTime"]
    )
    assert later["conditions"][0]["message"] == "still queued"
