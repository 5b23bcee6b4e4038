"""Per-target estimate of the sshd start-up slots our migrations hold, and when one more fits.

PVE opens each SSH connection of a migration only after the previous one returned, so one
migration holds at most one unauthenticated connection (one MaxStartups slot) at a time
(docs/reference/proxmox.md#ssh-connections-of-one-migration). While a migration is inside
a handshake phase it is therefore counted as one pending handshake; outside them (RAM
transfer over the authenticated tunnel) as none. The sum is an upper bound of what sshd sees
from us, whatever the exact handshake times inside a phase.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["start", "end"]

# A target's start window follows its slowest recent start phases: handshakes slow down
# with the target's (and our client's) CPU load, several times over on a busy host
# (docs/pvesim.md, "Real OpenSSH"), and a window shorter than the real phase frees slots
# while their logins are still pending.
LEARNED_START_PHASES = 8  # the last start phases seen per target
START_PHASE_MARGIN = 1.25  # the window is the slowest of them times this


@dataclass
class _Slot:
    phase: Phase
    until: float  # the slot is free from this time on
    began: float  # when its phase began (a start slot grows with a longer learned window)


@dataclass
class _TargetPacing:
    slots: dict[str, _Slot] = field(default_factory=dict)  # by job key
    last_start: float | None = None
    start_phases: deque[float] = field(default_factory=lambda: deque(maxlen=LEARNED_START_PHASES))


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

    def start_window(self, target: str) -> float:
        """How long a start to `target` holds its slot unless its tunnel is seen up sooner:
        the configured window, or longer when the target's start phases were seen longer."""
        pacing = self._targets.get(target)
        if pacing is None or not pacing.start_phases:
            return self._start_window
        return max(self._start_window, max(pacing.start_phases) * START_PHASE_MARGIN)

    def start_interval(self, budget: int, target: str) -> float:
        """Least time between two starts to one target: the start window shared by the budget."""
        return self.start_window(target) / budget

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
            ready = max(ready, pacing.last_start + self.start_interval(budget, target))
        busy_until = sorted(slot.until for slot in pacing.slots.values() if slot.until > now)
        excess = len(busy_until) - budget
        if excess >= 0:
            # one more start fits once `excess + 1` of the held slots have been freed
            ready = max(ready, busy_until[excess])
        return ready

    def record_start(self, target: str, key: str, at: float) -> None:
        """A migration to `target` started at `at`: it holds a slot for the start window."""
        pacing = self._targets.setdefault(target, _TargetPacing())
        pacing.slots[key] = _Slot("start", at + self.start_window(target), at)
        pacing.last_start = at if pacing.last_start is None else max(pacing.last_start, at)

    def record_tunnel_up(self, target: str, key: str, start_phase: float | None) -> None:
        """The tunnel is authenticated, so the start-phase handshakes are over: free the slot.
        `start_phase`, how long they took, teaches the target's window (`observe_start_phase`)."""
        if start_phase is not None:
            self.observe_start_phase(target, start_phase)
        pacing = self._targets.get(target)
        if pacing is not None and key in pacing.slots and pacing.slots[key].phase == "start":
            del pacing.slots[key]

    def observe_start_phase(self, target: str, seconds: float) -> None:
        """A start phase to `target` lasted `seconds` (or at least that long: its tunnel was
        not up yet). A longer window than before also holds the start slots already taken
        longer: their logins are as slow."""
        pacing = self._targets.setdefault(target, _TargetPacing())
        pacing.start_phases.append(seconds)
        window = self.start_window(target)
        for slot in pacing.slots.values():
            if slot.phase == "start":
                slot.until = max(slot.until, slot.began + window)

    def record_ending(self, target: str, key: str, at: float) -> None:
        """The migration is finishing: it holds a slot for the end window (one slot at most)."""
        pacing = self._targets.setdefault(target, _TargetPacing())
        held = pacing.slots.get(key)
        until = at + self._end_window
        if held is not None:
            until = max(until, held.until)
        pacing.slots[key] = _Slot("end", until, at)

    def release(self, target: str, key: str) -> None:
        """The migration's task has ended: whatever handshakes it made are over (slots are
        kept until then, expired or not: a longer learned window may extend a start slot)."""
        pacing = self._targets.get(target)
        if pacing is not None:
            pacing.slots.pop(key, None)
