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
class Login:
    """An admitted connection in its pre-authentication (it holds a MaxStartups slot)."""

    work: float  # lone-login seconds of CPU left before it is authenticated
    done: Callable[[], None]  # runs once its command runs


EPSILON = 1e-4  # lone-login seconds: below this a handshake is over (the clock is ~1.7e9 s)


@dataclass
class Sshd:
    """One node's sshd: pending pre-auth children, counters and PerSourcePenalties.

    Handshakes in progress share the node's CPU (processor sharing): each advances at
    1 / (1 + others / handshake_contention) of a lone one's speed, re-evaluated whenever one
    begins or ends, so a crowd that arrives together authenticates together and holds its
    MaxStartups slots until then, and its next logins arrive together again, as real
    OpenSSH does on loopback (docs/pvesim.md "Calibration: the model against the real
    daemon").
    """

    params: SshdParams
    pending: int = 0
    peak_pending: int = 0
    connections: int = 0
    drops: int = 0
    refusals: int = 0  # refused by PerSourcePenalties
    penalties: dict[str, tuple[float, float]] = field(default_factory=dict)  # src -> (secs, at)
    logins: list[Login] = field(default_factory=list)  # admitted, not yet authenticated
    updated: float = 0.0  # when `logins` last advanced
    generation: int = 0  # bumped on every change: an older wake-up is stale

    def admit(self, source: str, now: float, rng: random.Random) -> bool:
        """Take a new connection; True if it gets a pre-auth slot (caller must `begin`)."""
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

    def begin(self, now: float, rng: random.Random, done: Callable[[], None]) -> None:
        """An admitted connection starts its handshake; `done` runs once its command runs."""
        self._settle(now)
        params = self.params
        work = params.handshake_median * math.exp(rng.gauss(0.0, params.handshake_sigma))
        self.logins.append(Login(work, done))
        self.generation += 1

    def next_change(self) -> float | None:
        """Seconds until the next handshake ends if nothing else happens (None: idle)."""
        if not self.logins:
            return None
        return max(min(login.work for login in self.logins), EPSILON) / self._speed()

    def advance(self, now: float) -> list[Callable[[], None]]:
        """Progress up to `now`: each handshake that is over frees its slot; returns their
        `done`s (the command runs at once: a session start takes about 0.06 s, measured)."""
        self._settle(now)
        over = [each for each in self.logins if each.work <= EPSILON]
        for login in over:
            self.logins.remove(login)
            self.release()
        self.generation += 1
        return [login.done for login in over]

    def _speed(self) -> float:
        return 1.0 / (1.0 + (len(self.logins) - 1) / self.params.handshake_contention)

    def _settle(self, now: float) -> None:
        if self.logins:
            progress = (now - self.updated) * self._speed()
            for login in self.logins:
                login.work -= progress
        self.updated = now

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
