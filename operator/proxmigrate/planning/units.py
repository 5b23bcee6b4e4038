"""Byte sizes as people read them in conditions and plans."""

from __future__ import annotations

GIB = 1024**3
MIB = 1024**2


def format_bytes(size: int) -> str:
    """`16.0 GiB`, `512.0 MiB`: PVE shows memory in binary units, so the messages do too."""
    if abs(size) >= GIB:
        return f"{size / GIB:.1f} GiB"
    return f"{size / MIB:.1f} MiB"
