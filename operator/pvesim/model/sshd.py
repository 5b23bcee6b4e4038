"""OpenSSH's pre-authentication throttling (`sshd.c::should_drop_connection`).

Sources: docs/reference/proxmox.md#sshd-maxstartups and #persourcepenalties.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pvesim.model.params import MaxStartups, SshdParams
from pvesim.model.process import SshResult


def drop_probability(pending: int, limits: MaxStartups) -> float:
    """Chance that sshd drops a new connection while `pending` are unauthenticated."""
    if pending < limits.start:
        return 0.0
    if pending >= limits.full:
        return 1.0
    span = limits.full - limits.start
    percent = limits.rate + (100 - limits.rate) * (pending - limits.start) // span
    return percent / 100.0


def should_drop(pending: int, limits: MaxStartups, rng: random.Random) -> bool:
    """sshd's decision: `arc4random_uniform(100) < p` in sshd.c, here with the seeded RNG."""
    if pending < limits.start:
        return False
    if pending >= limits.full:
        return True
    return rng.randrange(100) < round(drop_probability(pending, limits) * 100)


@dataclass
class Sshd:
    """One node's sshd: pending pre-auth children, counters and PerSourcePenalties."""

    params: SshdParams
    pending: int = 0
    peak_pending: int = 0
    connections: int = 0
    drops: int = 0
    refusals: int = 0  # refused by PerSourcePenalties
    penalties: dict[str, tuple[float, float]] = field(default_factory=dict)  # src -> (secs, at)

    def admit(self, source: str, now: float, rng: random.Random) -> bool:
        """Take a new connection; True if it gets a pre-auth slot (caller must `release`)."""
        self.connections += 1
        if self._penalised(source, now):
            self.refusals += 1
            self.drops += 1
            return False
        if should_drop(self.pending, self.params.max_startups, rng):
            self.drops += 1  # a dropped connection forks no child and adds no penalty
            return False
        self.pending += 1
        self.peak_pending = max(self.peak_pending, self.pending)
        return True

    def handshake_seconds(self, rng: random.Random) -> float:
        """Connect to authenticated for a connection just admitted: lognormal around the
        median, slower with every other pre-auth child competing for the CPU."""
        params = self.params
        contention = 1.0 + (self.pending - 1) / params.handshake_contention
        return (
            params.handshake_median * contention * math.exp(rng.gauss(0.0, params.handshake_sigma))
        )

    def release(self) -> None:
        """The child authenticated or exited: its MaxStartups slot is free again."""
        self.pending -= 1

    def penalise(self, source: str, seconds: float, now: float) -> None:
        """Record a pre-auth child of `source` that exited unauthenticated (PVE 9 only)."""
        if not self.params.per_source_penalties:
            return
        current = self._current_penalty(source, now)
        self.penalties[source] = (min(current + seconds, self.params.penalty_max), now)

    def _current_penalty(self, source: str, now: float) -> float:
        secs, at = self.penalties.get(source, (0.0, now))
        return max(0.0, secs - (now - at))  # penalties decay in real time

    def _penalised(self, source: str, now: float) -> bool:
        if not self.params.per_source_penalties:
            return False
        return self._current_penalty(source, now) > self.params.penalty_refuse_threshold


class SshTransport(Protocol):
    """Real ssh logins instead of the model (pvesim/openssh.py): `done` gets the result."""

    def connect(
        self, source: str, target: str, command: str, done: Callable[[SshResult], None]
    ) -> None: ...
