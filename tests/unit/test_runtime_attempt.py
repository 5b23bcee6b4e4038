"""The runtime's record of one VMMigration: its states, legal moves, and the table's rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxmigrate.engine import Job
from proxmigrate.runtime.attempt import (
    ENDED_MEMORY_SECONDS,
    Attempt,
    Attempts,
    AttemptState,
    IllegalTransition,
    MigrationRequest,
)
from proxmigrate.runtime.journal import Journal

REQUEST = MigrationRequest("ns", "m", "uid-1", 100, "pve2")
JOB = Job(REQUEST.key, 100, "pve1", "pve2")


def test_a_retried_attempt_goes_round_and_forgets_its_task() -> None:
    attempt = Attempt(REQUEST, {})
    attempt.queue(JOB, 1.0)
    attempt.start(2.0)
    assert attempt.running and attempt.state is AttemptState.STARTING
    attempt.lose_answer()
    attempt.track("UPID:a", probe_at=5.0)
    attempt.log_lines_seen, attempt.ending_at = 7, 9.0
    attempt.queue(JOB, 10.0)  # failed, transient: queued again
    assert attempt.state is AttemptState.QUEUED and not attempt.running
    assert (attempt.upid, attempt.probe_at, attempt.ending_at, attempt.log_lines_seen) == (
        None,
        None,
        None,
        0,
    )
    attempt.start(20.0)
    attempt.track("UPID:b", probe_at=None)
    attempt.end()
    assert attempt.state is AttemptState.ENDED


@pytest.mark.parametrize(
    ("moves", "illegal"),
    [
        ([], "start"),  # accepting: not queued yet
        (["queue", "start"], "withdraw"),  # started: too late to take back
        (["queue", "withdraw"], "start"),  # withdrawn: never starts
        (["queue"], "lose_answer"),  # nothing was sent
        (["queue", "start", "lose_answer"], "lose_answer"),
        (["queue", "end"], "queue"),  # ended for good
    ],
)
def test_moves_a_state_does_not_lead_to_raise(moves: list[str], illegal: str) -> None:
    attempt = Attempt(REQUEST, {})
    calls: dict[str, Any] = {
        "queue": lambda: attempt.queue(JOB, 0.0),
        "start": lambda: attempt.start(0.0),
        "withdraw": attempt.withdraw,
        "lose_answer": attempt.lose_answer,
        "end": attempt.end,
    }
    for move in moves:
        calls[move]()
    before = attempt.state
    with pytest.raises(IllegalTransition):
        calls[illegal]()
    assert attempt.state is before


def test_the_table_admits_each_vmmigration_once_and_forgets_ended_ones_later() -> None:
    table = Attempts()
    first = table.admit(REQUEST, {}, 0.0)
    assert first is not None and table.admit(REQUEST, {}, 1.0) is None
    first.queue(JOB, 1.0)
    again = MigrationRequest("ns", "m", "uid-2", 100, "pve2")  # same name, new object
    assert table.admit(again, {}, 2.0) is None  # the old one still queued here
    first.end()
    first.ended_at = 3.0
    assert table.admit(REQUEST, {}, 4.0) is None  # a listing may still show it unfinished
    assert table.admit(REQUEST, {}, 3.0 + ENDED_MEMORY_SECONDS + 1) is not None
    table[REQUEST.key].end()
    newest = table.admit(again, {}, 5.0)  # an ended one gives way to a new object at once
    assert newest is not None and table[REQUEST.key] is newest


def test_a_record_with_an_unwritten_status_is_kept_until_the_api_server_has_it() -> None:
    class Kube:
        def __init__(self) -> None:
            self.refusing = True

        async def patch_status(
            self, plural: str, ns: str, name: str, status: dict[str, Any]
        ) -> dict[str, Any]:
            if self.refusing:
                raise RuntimeError("(500)")
            return {"status": status}

    async def scenario() -> None:
        table, kube = Attempts(), Kube()
        journal = Journal(kube, table, lambda: 50.0)
        attempt = table.admit(REQUEST, {}, 0.0)
        assert attempt is not None
        await journal.write(attempt, {"phase": "Queued"})
        table.drop(attempt)  # let go, but its status is not written yet
        assert table[REQUEST.key].state is AttemptState.ENDED
        assert table.admit(REQUEST, {}, 1.0) is None
        kube.refusing = False
        await journal.flush()
        assert REQUEST.key not in table  # written: gone, so it can be taken again

        final = table.admit(REQUEST, {}, 2.0)
        assert final is not None
        final.end()
        await journal.write(final, {"phase": "Succeeded"})
        assert (final.ended_at, final.unwritten, final.status) == (50.0, None, {})

    asyncio.run(scenario())
