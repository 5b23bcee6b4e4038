"""PVE tasks and their log wording helpers (§3)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pvesim.model.upid import Upid

if TYPE_CHECKING:
    from pvesim.model.process import Process


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
        """End the task: `TASK OK`, `TASK WARNINGS: n` or `TASK ERROR: <msg>` (§3)."""
        if self.endtime is not None:
            return
        self.endtime = now
        if error is not None:
            self.exitstatus = error
            self.lines.append(f"TASK ERROR: {error}")
        elif self.warnings:
            self.exitstatus = f"WARNINGS: {self.warnings}"
            self.lines.append(f"TASK WARNINGS: {self.warnings}")
        else:
            self.exitstatus = "OK"
            self.lines.append("TASK OK")
        self.process = None

    def status(self) -> dict[str, object]:
        """`GET /nodes/{node}/tasks/{upid}/status`."""
        u = self.upid
        data: dict[str, object] = {
            "upid": str(u),
            "node": u.node,
            "pid": u.pid,
            "pstart": u.pstart,
            "starttime": u.starttime,
            "type": u.type,
            "id": u.id,
            "user": u.user,
            "status": "running" if self.running else "stopped",
        }
        if not self.running:
            data["exitstatus"] = self.exitstatus
        return data
