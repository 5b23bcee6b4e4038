"""PVE task ids (UPIDs): parse and format.

Format (pve-common `src/PVE/UPID.pm`, `encode`/`decode`; docs/reference/proxmox.md
#task-lists-task-status-and-upids):
`UPID:<node>:<pid 8 hex>:<pstart 8-9 hex>:<starttime 8 hex>:<type>:<id>:<user>:`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UPID_RE = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9](?:[a-zA-Z0-9.\-]*[a-zA-Z0-9])?):"
    r"(?P<pid>[0-9A-Fa-f]{8}):(?P<pstart>[0-9A-Fa-f]{8,9}):(?P<starttime>[0-9A-Fa-f]{8}):"
    r"(?P<type>[^:\s]+):(?P<id>[^:\s]*):(?P<user>[^:\s]+):$"
)


@dataclass(frozen=True)
class Upid:
    """The fields of a UPID; `starttime` is epoch seconds, `id` the VMID for qemu tasks."""

    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    @property
    def vmid(self) -> int | None:
        return int(self.id) if self.id.isdigit() else None

    def __str__(self) -> str:
        return format_upid(self)


def parse_upid(text: str) -> Upid:
    """Parse a UPID; raises ValueError on anything else (a UPID is stored and compared verbatim)."""
    match = _UPID_RE.match(text)
    if match is None:
        raise ValueError(f"not a PVE UPID: {text!r}")
    return Upid(
        node=match["node"],
        pid=int(match["pid"], 16),
        pstart=int(match["pstart"], 16),
        starttime=int(match["starttime"], 16),
        type=match["type"],
        id=match["id"],
        user=match["user"],
    )


def format_upid(upid: Upid) -> str:
    """Format like PVE: upper-case hex, pid and starttime 8 digits, pstart at least 8."""
    return (
        f"UPID:{upid.node}:{upid.pid:08X}:{upid.pstart:08X}:{upid.starttime:08X}:"
        f"{upid.type}:{upid.id}:{upid.user}:"
    )


def is_upid(text: object) -> bool:
    return isinstance(text, str) and _UPID_RE.match(text) is not None
