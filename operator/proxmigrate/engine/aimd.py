"""Per-target AIMD allowances: an sshd drop halves them, successes raise them one at a time.

A drop means the target's sshd was busier than our estimate assumed (slow logins, other
clients), so both what bounds our SSH load there shrink: the concurrency allowance and the
pending-handshake budget (which also stretches the spacing between starts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Allowance:
    concurrency: int
    handshakes: int
    successes: int = 0  # since the last change
    decreased_at: float | None = None


class AdaptiveAllowances:
    """Targets without an entry are at the configured caps; only reduced targets keep state."""

    def __init__(self, concurrency_cap: int, handshake_cap: int, increase_every: int) -> None:
        self._concurrency_cap = concurrency_cap
        self._handshake_cap = handshake_cap
        self._increase_every = increase_every
        self._reduced: dict[str, _Allowance] = {}

    def set_caps(self, concurrency_cap: int, handshake_cap: int, increase_every: int) -> None:
        """Apply new caps, keeping each target's reduction (clamped to the new caps)."""
        self._concurrency_cap = concurrency_cap
        self._handshake_cap = handshake_cap
        self._increase_every = increase_every
        for target in list(self._reduced):
            allowance = self._reduced[target]
            allowance.concurrency = min(allowance.concurrency, concurrency_cap)
            allowance.handshakes = min(allowance.handshakes, handshake_cap)
            self._forget_if_at_caps(target)

    def concurrency(self, target: str) -> int:
        allowance = self._reduced.get(target)
        return self._concurrency_cap if allowance is None else allowance.concurrency

    def handshakes(self, target: str) -> int:
        allowance = self._reduced.get(target)
        return self._handshake_cap if allowance is None else allowance.handshakes

    def reduced_targets(self) -> list[str]:
        return list(self._reduced)

    def on_drop(self, target: str, started_at: float, now: float) -> bool:
        """Halve the target's allowances (floor 1); True if they changed.

        Like TCP's one decrease per window, a drop from a migration started before the last
        decrease is ignored: it reflects the old, already corrected, load.
        """
        allowance = self._reduced.setdefault(
            target, _Allowance(self._concurrency_cap, self._handshake_cap)
        )
        if allowance.decreased_at is not None and started_at < allowance.decreased_at:
            return False
        allowance.concurrency = max(1, allowance.concurrency // 2)
        allowance.handshakes = max(1, allowance.handshakes // 2)
        allowance.successes = 0
        allowance.decreased_at = now
        return True

    def on_success(self, target: str) -> None:
        """Count a success; every `increase_every` of them add one to each allowance."""
        allowance = self._reduced.get(target)
        if allowance is None:
            return
        allowance.successes += 1
        if allowance.successes < self._increase_every:
            return
        allowance.successes = 0
        allowance.concurrency = min(self._concurrency_cap, allowance.concurrency + 1)
        allowance.handshakes = min(self._handshake_cap, allowance.handshakes + 1)
        self._forget_if_at_caps(target)

    def _forget_if_at_caps(self, target: str) -> None:
        allowance = self._reduced[target]
        if (
            allowance.concurrency >= self._concurrency_cap
            and allowance.handshakes >= self._handshake_cap
        ):
            del self._reduced[target]
