"""PVE task ids (pve-common `src/PVE/UPID.pm`, docs/reference/proxmox.md
#task-lists-task-status-and-upids)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Upid:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
            f"{self.type}:{self.id}:{self.user}:"
        )
