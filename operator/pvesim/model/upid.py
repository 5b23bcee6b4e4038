"""PVE task ids (`pve-common:UPID.pm`, §3)."""

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

    @classmethod
    def parse(cls, text: str) -> Upid:
        """Inverse of `str()`; raises ValueError on anything that is not a UPID."""
        parts = text.split(":")
        if len(parts) != 9 or parts[0] != "UPID" or parts[8] != "":
            raise ValueError(f"unable to parse worker upid '{text}'")
        _, node, pid, pstart, start, typ, ident, user, _ = parts
        return cls(node, int(pid, 16), int(pstart, 16), int(start, 16), typ, ident, user)
