"""One record per VMMigration the runtime holds, its state explicit (pure, no I/O).

A VMMigration is accepted, queued in the engine, started (intent written, request sent),
tracked by its PVE task, and ended; it may be withdrawn before it starts. Its record carries
that state, what tracking learnt, and the status as last written (the runtime's copy, so it
can build the next patch without reading the API server). Each transition checks that it
is legal: a record never sits in two places at once, whatever order events come in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from proxmigrate.api.constants import API_VERSION, VM_MIGRATION
from proxmigrate.engine import Job
from proxmigrate.inventory import VMInfo
from proxmigrate.pve.upid import parse_upid

# A VMMigration ended here is not taken again for this long: a listing taken before its
# final status was written still shows it unfinished.
ENDED_MEMORY_SECONDS = 600.0


@dataclass(frozen=True)
class MigrationRequest:
    """What a VMMigration asks for (its immutable spec) and where it lives."""

    namespace: str
    name: str
    uid: str
    vmid: int
    target: str
    source: str | None = None
    online: bool = True
    with_local_disks: bool = False
    bandwidth_limit_kib: int | None = None
    priority: int = 0
    generation: int = 1  # metadata.generation, what every status written observes

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def event_ref(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": VM_MIGRATION.kind,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }


class AttemptState(StrEnum):
    ACCEPTING = "accepting"  # accept() reads PVE before it queues, resumes or ends it
    QUEUED = "queued"  # in the engine's queue (also between retries)
    STARTING = "starting"  # given a slot: intent written, then the request sent
    AWAITING_TASK = "awaiting-task"  # sent, answer lost: its task is looked for in task lists
    TRACKING = "tracking"  # its PVE task (UPID) is known and followed
    WITHDRAWN = "withdrawn"  # taken back before it started; the VMMigration not deleted yet
    ENDED = "ended"  # the engine let it go; its last status may still be unwritten


RUNNING_STATES = frozenset(
    {AttemptState.STARTING, AttemptState.AWAITING_TASK, AttemptState.TRACKING}
)
_FROM: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.QUEUED: frozenset({AttemptState.ACCEPTING, *RUNNING_STATES}),  # retry
    AttemptState.STARTING: frozenset({AttemptState.QUEUED}),
    AttemptState.AWAITING_TASK: frozenset({AttemptState.STARTING}),
    AttemptState.TRACKING: frozenset({AttemptState.ACCEPTING, *RUNNING_STATES}),
    AttemptState.WITHDRAWN: frozenset({AttemptState.QUEUED}),
    AttemptState.ENDED: frozenset(AttemptState),
}


class IllegalTransition(RuntimeError):
    """A bug: a record was asked to move where its state does not lead."""


@dataclass
class Attempt:
    """The runtime's record of one VMMigration; see the module docstring."""

    request: MigrationRequest
    status: dict[str, Any]  # the VMMigration's status as written (or read when accepted)
    state: AttemptState = AttemptState.ACCEPTING
    job: Job | None = None  # what the engine schedules, once queued
    vm: VMInfo | None = None  # as the inventory showed it when queued (HA-managed, running)
    queued_at: float = 0.0
    started_at: float = 0.0  # when the current attempt's request was (to be) sent
    upid: str | None = None
    ha_queued_at: float | None = None  # when its `hamigrate` was first seen ended OK
    probe_at: float | None = None  # when to read the task log for its transfer rate next
    log_lines_seen: int = 0
    log_began: float | None = None  # its log's first stamp (runtime/start_phase.py)
    tunnel_seen: bool = False  # its log showed the SSH tunnel up: start phase over
    ending_at: float | None = None  # predicted end of the RAM transfer
    # when its task was last seen alive: a task list showed it, or its log grew
    # (runtime/log_look.py `_alive`): the safety net lists its node SAFETY_NET_SECONDS
    # later (runtime/look_schedule.py)
    alive_at: float = 0.0
    closing: bool = False  # its end is being judged (PVE is read) before the slot goes
    unwritten: dict[str, Any] | None = None  # status patch the API server has not confirmed
    writing: int = 0  # status writes of it in flight
    ended_at: float | None = None  # when its final status was confirmed

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def task_node(self) -> str:
        """The node its task runs on, as its UPID names it (pve-common `src/PVE/UPID.pm`)."""
        assert self.upid is not None, "only an attempt with a task has a task node"
        return parse_upid(self.upid).node

    @property
    def source(self) -> str:
        assert self.job is not None, "only queued or running attempts have a source"
        return self.job.source

    def _move(self, to: AttemptState) -> None:
        if self.state not in _FROM[to]:
            raise IllegalTransition(f"{self.key}: {self.state} -> {to}")
        self.state = to

    def _forget_task(self) -> None:
        self.upid = None
        self.ha_queued_at = self.probe_at = self.ending_at = None
        self.log_lines_seen = 0
        self.log_began, self.tunnel_seen = None, False
        self.alive_at = 0.0

    def queue(self, job: Job, now: float, vm: VMInfo | None = None) -> None:
        """Into the engine's queue: first submission, or a retry after a failed attempt."""
        self._move(AttemptState.QUEUED)
        self.job, self.queued_at = job, now
        self.vm = vm or self.vm
        self._forget_task()

    def start(self, now: float) -> None:
        self._move(AttemptState.STARTING)
        self.started_at = now

    def resume(self, job: Job, upid: str, started_at: float, vm: VMInfo | None) -> None:
        """Running before a restart, its task known or found: followed from now on."""
        self.job, self.vm, self.started_at = job, vm, started_at
        self.track(upid, probe_at=None)

    def track(self, upid: str, probe_at: float | None) -> None:
        """Its task is known (the POST's answer, found in a task list, or an HA hand-off)."""
        self._move(AttemptState.TRACKING)
        self.upid, self.probe_at = upid, probe_at

    def lose_answer(self) -> None:
        """The request may have reached PVE but its answer did not come back."""
        self._move(AttemptState.AWAITING_TASK)

    def withdraw(self) -> None:
        self._move(AttemptState.WITHDRAWN)

    def end(self) -> None:
        self._move(AttemptState.ENDED)


@dataclass
class Attempts:
    """The records of one cluster, by VMMigration key."""

    _by_key: dict[str, Attempt] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(list(self._by_key.values()))

    def get(self, key: str) -> Attempt | None:
        return self._by_key.get(key)

    def __getitem__(self, key: str) -> Attempt:
        return self._by_key[key]

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def in_state(self, *states: AttemptState) -> list[Attempt]:
        return [a for a in self._by_key.values() if a.state in states]

    @property
    def running(self) -> list[Attempt]:
        return self.in_state(*RUNNING_STATES)

    @property
    def any_queued(self) -> bool:
        return any(a.state is AttemptState.QUEUED for a in self._by_key.values())

    def admit(
        self, request: MigrationRequest, status: dict[str, Any], now: float
    ) -> Attempt | None:
        """A new record for `request`, or None when it is known here already: held in any
        state, or ended (same uid) less than ENDED_MEMORY_SECONDS ago. An ended record of an
        earlier object of that name gives way."""
        for old in list(self._by_key.values()):
            if old.ended_at is not None and now - old.ended_at > ENDED_MEMORY_SECONDS:
                del self._by_key[old.key]
        held = self._by_key.get(request.key)
        if held is not None and (
            held.state is not AttemptState.ENDED or held.request.uid == request.uid
        ):
            return None
        status = {**status, "observedGeneration": request.generation}
        attempt = self._by_key[request.key] = Attempt(request, status)
        return attempt

    def drop(self, attempt: Attempt) -> None:
        """Let a record go; one whose status is still unwritten ends instead and goes once
        the API server has it."""
        if attempt.unwritten is not None:
            attempt.end()
        elif self._by_key.get(attempt.key) is attempt:
            del self._by_key[attempt.key]
