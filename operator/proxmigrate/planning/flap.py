"""Flap guard: a guest moved too often in a short time is fighting something; stop moving it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxmigrate.planning.errors import PlanError


@dataclass(frozen=True)
class FlapGuard:
    """At most `max_migrations` of one guest within any `window_seconds`.

    Default 3 per hour: a placement corrected more often than that is racing an HA rule, CRS
    or a person, and each move costs a full RAM copy. (KubeVirt alerts at 12 migrations of one
    VMI in 24 h, `KubeVirtVMIExcessiveMigrations`; a guard must act sooner than an alert.)
    """

    max_migrations: int = 3
    window_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_migrations < 1:
            raise PlanError(f"flap guard limit must be at least 1, got {self.max_migrations}")
        if self.window_seconds <= 0:
            raise PlanError(f"flap guard window must be positive, got {self.window_seconds}")

    def allows(self, history: Iterable[float], now: float) -> bool:
        """May the guest migrate at `now`, given the start times of its past migrations?"""
        return self.next_allowed_at(history, now) <= now

    def next_allowed_at(self, history: Iterable[float], now: float) -> float:
        """`now` when allowed, else when the oldest counted migration leaves the window.

        Timestamps after `now` (clock skew) count as recent, erring on the side of waiting.
        """
        recent = sorted(t for t in history if now - t < self.window_seconds)
        if len(recent) < self.max_migrations:
            return now
        return recent[len(recent) - self.max_migrations] + self.window_seconds
