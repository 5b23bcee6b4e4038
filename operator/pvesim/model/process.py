"""Simulated processes: generators that yield what they wait for.

A PVE worker (migration, migrateall, hamigrate) is written as straight-line code that yields
`Sleep` or `SshCall`; the cluster resumes it when the wait is over. A `token` makes wake-ups
that were superseded (by a signal) harmless.

Signals follow pve-common `src/PVE/RESTEnvironment.pm`: a worker runs in its own session
(fork_worker: setsid), so `DELETE .../tasks/{upid}` signals the worker and every child it
started (ssh included) at once (kill_process_group). The worker's SIGTERM handler decides what
happens to it: fork_worker's own `die "received interrupt\n"` unless the worker installed
another one (AbstractMigrate.pm's migrate and $eval_int do).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sleep:
    seconds: float
    child: str | None = None  # a command a child process runs meanwhile (SIGTERM kills it)


@dataclass(frozen=True)
class SshCall:
    """One new SSH connection source -> target running `command` (no reuse).

    docs/reference/proxmox.md#ssh-connections-of-one-migration
    """

    source: str
    target: str
    command: str


class Session(Protocol):
    """A real ssh session (pvesim/openssh.py) the worker ends when its command is done."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SshResult:
    ok: bool
    stderr: tuple[str, ...] = ()  # ssh's own lines when the connection failed
    session: Session | None = None  # with a real sshd: the logged-in session to close


class Interrupted(Exception):
    """A signal handler's `die`, raised inside the worker at its current wait."""


class ChildKilled(Exception):
    """The child the worker waited on died of SIGTERM while the worker's own handler only
    logged it: pve-common `PVE/Cmd.pm` run then dies `got signal 15`."""


Command = Sleep | SshCall
Worker = Generator[Command, Any, None]
Dispatch = Callable[["Process", Command, int], None]
SigtermHandler = Callable[[], BaseException | None]  # an error to raise, or None: carry on


def fork_worker_sigterm() -> BaseException:
    """fork_worker's child: `$SIG{TERM} = sub { die "received interrupt\\n"; }`."""
    return Interrupted("received interrupt")


class Process:
    def __init__(self, worker: Worker, dispatch: Dispatch) -> None:
        self._worker = worker
        self._dispatch = dispatch
        self.token = 0
        self.done = False
        self.waiting: Command | None = None
        self.sigterm: SigtermHandler = fork_worker_sigterm
        self.on_uncaught: Callable[[str], None] | None = None  # a die nobody caught
        self.on_kill: Callable[[], None] | None = None  # SIGKILL: what the worker leaves

    def start(self) -> None:
        self._step(None, None)

    def wake(self, token: int, value: Any) -> None:
        if token == self.token and not self.done:
            self._step(value, None)

    def terminate(self) -> None:
        """SIGTERM to the process group: the worker's handler runs, and a child it waits on
        (ssh, a remote command) dies with it."""
        if self.done:
            return
        error = self.sigterm()
        if error is None and self._waits_on_child():
            error = ChildKilled("got signal 15")
        if error is not None:
            self._step(None, error)

    def kill(self) -> None:
        """SIGKILL: the worker stops where it is; nothing of its cleanup runs."""
        if self.done:
            return
        self.done = True
        self.token += 1
        self._worker.close()
        if self.on_kill is not None:
            self.on_kill()

    def _waits_on_child(self) -> bool:
        waiting = self.waiting
        return isinstance(waiting, SshCall) or (
            isinstance(waiting, Sleep) and waiting.child is not None
        )

    def _step(self, value: Any, error: BaseException | None) -> None:
        self.token += 1
        try:
            command = self._worker.throw(error) if error else self._worker.send(value)
        except StopIteration:
            self.done = True
            return
        except Interrupted as exc:  # fork_worker's eval turns it into `TASK ERROR: <msg>`
            self.done = True
            if self.on_uncaught is not None:
                self.on_uncaught(str(exc))
            return
        self.waiting = command
        self._dispatch(self, command, self.token)
