"""Simulated processes: generators that yield what they wait for.

A PVE worker (migration, migrateall, hamigrate) is written as straight-line code that yields
`Sleep` or `SshCall`; the cluster resumes it when the wait is over. A `token` makes wake-ups
that were superseded (by an interrupt) harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class SshCall:
    """One new SSH connection source -> target running `command` (no reuse).

    docs/reference/proxmox.md#ssh-connections-of-one-migration
    """

    source: str
    target: str
    command: str


@dataclass(frozen=True)
class SshResult:
    ok: bool
    stderr: tuple[str, ...] = ()  # ssh's own lines when the connection failed


class Interrupted(Exception):
    """The task was stopped (`DELETE /nodes/{node}/tasks/{upid}` sends SIGTERM)."""


Command = Sleep | SshCall
Worker = Generator[Command, Any, None]
Dispatch = Callable[["Process", Command, int], None]


class Process:
    def __init__(self, worker: Worker, dispatch: Dispatch) -> None:
        self._worker = worker
        self._dispatch = dispatch
        self.token = 0
        self.done = False
        self.interrupted = False
        self.shielded = False  # set once stopping could no longer undo anything

    def start(self) -> None:
        self._step(None, None)

    def wake(self, token: int, value: Any) -> None:
        if token == self.token and not self.done:
            self._step(value, None)

    def interrupt(self) -> None:
        """Raise `Interrupted` inside the worker at its current wait (once)."""
        if self.done or self.interrupted or self.shielded:
            return
        self.interrupted = True
        self._step(None, Interrupted("interrupted by signal"))

    def _step(self, value: Any, error: BaseException | None) -> None:
        self.token += 1
        try:
            command = self._worker.throw(error) if error else self._worker.send(value)
        except StopIteration:
            self.done = True
            return
        self._dispatch(self, command, self.token)
