"""PVE tasks: their log, their end line, their API rows, and stopping them.

Sources: pve-common `src/PVE/RESTEnvironment.pm` (fork_worker, check_worker,
kill_process_group), `src/PVE/UPID.pm` (read_status, normalize_status_type), pve-manager
`PVE/API2/Tasks.pm` (node_tasks, read_task_status, stop_task).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pvesim.model.upid import Upid

if TYPE_CHECKING:
    from pvesim.model.process import Process

# RESTEnvironment.pm kill_process_group: SIGTERM, then up to 5 checks 1 s apart, then SIGKILL.
KILL_CHECKS = 5
KILL_CHECK_INTERVAL = 1.0
# UPID.pm read_status: the last log line is no `TASK ...` line (a worker killed by SIGKILL).
UNEXPECTED_STATUS = "unexpected status"


def render_bytes(value: float, precision: int = 1) -> str:
    """`PVE::Format::render_bytes` (QemuMigrate logs with precision 1)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    unit = 0
    while value > 1023 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.{precision}f} {units[unit]}"


def timestamp(t: float) -> str:
    """Task log timestamp `YYYY-MM-DD HH:MM:SS` (nodes run UTC in the simulator)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def duration(seconds: float) -> str:
    """`HH:MM:SS` as in `migration finished successfully (duration 00:00:20)`."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def split_token(user: str) -> dict[str, str]:
    """`user` and `tokenid` of a task's owner, as Tasks.pm's $convert_token_task splits a token
    (`root@pam!pvesim` -> `root@pam` + `pvesim`); a user is left as it is."""
    name, bang, token = user.partition("!")
    return {"user": name, "tokenid": token} if bang else {"user": user}


def status_type(exitstatus: str | None) -> str:
    """pve-common UPID.pm normalize_status_type: ok | warning | error | unknown."""
    if not exitstatus or exitstatus == UNEXPECTED_STATUS:
        return "unknown"
    if exitstatus == "OK":
        return "ok"
    if exitstatus.startswith("WARNINGS: ") and exitstatus[10:].isdigit():
        return "warning"
    return "error"


@dataclass
class Stopping:
    """A `DELETE /nodes/{node}/tasks/{upid}` in progress: PVE answers once the worker is gone
    (Tasks.pm stop_task -> RESTEnvironment check_worker($upid, 1) blocks in
    kill_process_group)."""

    answered: bool = False


@dataclass(eq=False)
class Task:
    """One PVE worker task; `lines` are final text, as `GET .../log` returns them."""

    upid: Upid
    starttime: float
    lines: list[str] = field(default_factory=list)
    endtime: float | None = None
    exitstatus: str | None = None
    process: Process | None = None
    warnings: int = 0

    @property
    def running(self) -> bool:
        return self.endtime is None

    def log(self, now: float, message: str) -> None:
        self.lines.append(f"{timestamp(now)} {message}")

    def raw(self, message: str) -> None:
        """Output printed without a timestamp (worker STDERR, ssh's own messages)."""
        self.lines.append(message)

    def finish(self, now: float, error: str | None = None) -> None:
        """End the task as fork_worker's child does: `TASK OK`, `TASK WARNINGS: n` or
        `TASK ERROR: <msg>`, the error chomped and its newlines turned into spaces."""
        if self.endtime is not None:
            return
        self.endtime = now
        if error is not None:
            self.exitstatus = error.rstrip("\n").replace("\n", " ")
            self.lines.append(f"TASK ERROR: {self.exitstatus}")
        elif self.warnings:
            self.exitstatus = f"WARNINGS: {self.warnings}"
            self.lines.append(f"TASK WARNINGS: {self.warnings}")
        else:
            self.exitstatus = "OK"
            self.lines.append("TASK OK")
        self.process = None

    def killed(self, now: float) -> None:
        """SIGKILL: the worker writes no end line; UPID.pm read_status then answers
        `unexpected status` (an error, type unknown)."""
        if self.endtime is not None:
            return
        self.endtime = now
        self.exitstatus = UNEXPECTED_STATUS
        self.process = None

    def stop(self, clock: Callable[[], float], schedule: Callable[..., None]) -> Stopping:
        """`DELETE .../tasks/{upid}`: SIGTERM to the worker's process group, checks 1 s apart,
        SIGKILL when still alive after 5 s (RESTEnvironment.pm kill_process_group)."""
        stopping = Stopping()
        process = self.process
        if not self.running or process is None:
            stopping.answered = True
            return stopping
        process.on_uncaught = lambda message: self.finish(clock(), message)
        process.terminate()

        def check(done: int) -> None:
            if not self.running:
                stopping.answered = True
            elif done == KILL_CHECKS:
                process.kill()
                self.killed(clock())
                stopping.answered = True
            else:
                schedule(KILL_CHECK_INTERVAL, check, done + 1)

        check(0)
        return stopping

    def status(self) -> dict[str, Any]:
        """`GET /nodes/{node}/tasks/{upid}/status` (Tasks.pm read_task_status: the owner split
        by $convert_token_task; `exitstatus` once stopped)."""
        data = self._upid_fields() | split_token(self.upid.user)
        data["status"] = "running" if self.running else "stopped"
        if not self.running:
            data["exitstatus"] = self.exitstatus
        return data

    def list_row(self) -> dict[str, Any]:
        """A row of `GET /nodes/{node}/tasks` (Tasks.pm node_tasks).

        A running task comes from the `active` file (INotify.pm read_active_workers: `saved`
        0, `status` set to `RUNNING`) and is not token-split (only index lines go through
        $convert_token_task); a finished one comes from the index with `endtime`, `status`.
        """
        row = self._upid_fields()
        if self.running:
            return row | {"user": self.upid.user, "saved": "0", "status": "RUNNING"}
        return (
            row
            | split_token(self.upid.user)
            | {"endtime": int(self.endtime or 0), "status": self.exitstatus}
        )

    def _upid_fields(self) -> dict[str, Any]:
        """The UPID's parts, which task lists and the status answer both carry."""
        u = self.upid
        return {
            "upid": str(u),
            "node": u.node,
            "pid": u.pid,
            "pstart": u.pstart,
            "starttime": u.starttime,
            "type": u.type,
            "id": u.id,
        }
