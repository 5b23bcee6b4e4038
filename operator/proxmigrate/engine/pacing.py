"""Per-target estimate of the sshd start-up slots our migrations hold, and when one more fits.

PVE opens each SSH connection of a migration only after the previous one returned, so one
migration holds at most one unauthenticated connection (one MaxStartups slot) at a time
(docs/reference/proxmox.md#ssh-connections-of-one-migration). While a migration is inside
a handshake phase it is therefore counted as one pending handshake; outside them (RAM
transfer over the authenticated tunnel) as none. The sum is an upper bound of what sshd sees
from us, whatever the exact handshake times inside a phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["start", "end"]


@dataclass
class _Slot:
    phase: Phase
    until: float  # the slot is free from this time on


@dataclass
class _TargetPacing:
    slots: dict[str, _Slot] = field(default_factory=dict)  # by job key
    last_start: float | None = None


class HandshakePacer:
    """Tracks handshake phases per target and spaces starts so that the budget refills evenly."""

    def __init__(self, start_window: float, end_window: float) -> None:
        self._start_window = start_window
        self._end_window = end_window
        self._targets: dict[str, _TargetPacing] = {}

    def set_windows(self, start_window: float, end_window: float) -> None:
        """Apply new phase lengths to future phases; slots already held keep their end."""
        self._start_window = start_window
        self._end_window = end_window

    def start_interval(self, budget: int) -> float:
        """Least time between two starts to one target: the start window shared by the budget."""
        return self._start_window / budget

    def pending(self, target: str, now: float) -> int:
        """Handshakes our migrations may have pending on `target` at `now` (upper bound)."""
        pacing = self._targets.get(target)
        if pacing is None:
            return 0
        return sum(1 for slot in pacing.slots.values() if slot.until > now)

    def ready_at(self, target: str, now: float, budget: int) -> float:
        """Earliest time >= `now` at which one more start fits, if nothing else happens."""
        pacing = self._targets.get(target)
        if pacing is None:
            return now
        ready = now
        if pacing.last_start is not None:
            ready = max(ready, pacing.last_start + self.start_interval(budget))
        busy_until = sorted(slot.until for slot in pacing.slots.values() if slot.until > now)
        excess = len(busy_until) - budget
        if excess >= 0:
            # one more start fits once `excess + 1` of the held slots have been freed
            ready = max(ready, busy_until[excess])
        return ready

    def record_start(self, target: str, key: str, at: float) -> None:
        """A migration to `target` started at `at`: it holds a slot for the start window."""
        pacing = self._targets.setdefault(target, _TargetPacing())
        self._forget_expired(pacing, at)
        pacing.slots[key] = _Slot("start", at + self._start_window)
        pacing.last_start = at if pacing.last_start is None else max(pacing.last_start, at)

    def record_tunnel_up(self, target: str, key: str) -> None:
        """The tunnel is authenticated, so the start-phase handshakes are over: free the slot."""
        pacing = self._targets.get(target)
        if pacing is not None and key in pacing.slots and pacing.slots[key].phase == "start":
            del pacing.slots[key]

    def record_ending(self, target: str, key: str, at: float) -> None:
        """The migration is finishing: it holds a slot for the end window (one slot at most)."""
        pacing = self._targets.setdefault(target, _TargetPacing())
        held = pacing.slots.get(key)
        until = at + self._end_window
        if held is not None:
            until = max(until, held.until)
        pacing.slots[key] = _Slot("end", until)

    def release(self, target: str, key: str) -> None:
        """The migration's task has ended: whatever handshakes it made are over."""
        pacing = self._targets.get(target)
        if pacing is not None:
            pacing.slots.pop(key, None)

    @staticmethod
    def _forget_expired(pacing: _TargetPacing, now: float) -> None:
        for key in [key for key, slot in pacing.slots.items() if slot.until <= now]:
            del pacing.slots[key]
