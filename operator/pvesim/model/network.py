"""Max-min fair sharing of node links among migration streams (progressive filling)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class Stream:
    """One memory stream from `source` egress to `target` ingress, at most `cap` bytes/s."""

    source: str
    target: str
    cap: float
    rate: float = 0.0
    sent: float = 0.0  # bytes, as of `updated_at`
    updated_at: float = 0.0

    def sent_at(self, now: float) -> float:
        """Bytes sent by `now`; the rate is constant between reshares."""
        return self.sent + self.rate * (now - self.updated_at)

    def settle(self, now: float) -> None:
        """Fold the current rate into `sent` before the rate changes."""
        self.sent = self.sent_at(now)
        self.updated_at = now


def fair_share(streams: list[Stream], link_capacity: dict[tuple[str, str], float]) -> None:
    """Set every stream's `rate` to its max-min fair share.

    Links are keyed ("out", node) and ("in", node). All unfrozen streams grow together until
    a stream reaches its cap or a link saturates; those freeze and the rest keep growing.
    """
    for stream in streams:
        stream.rate = 0.0
    spare = dict(link_capacity)
    active = [s for s in streams if s.cap > 0]
    while active:
        users: dict[tuple[str, str], int] = {}
        for stream in active:
            for link in (("out", stream.source), ("in", stream.target)):
                users[link] = users.get(link, 0) + 1
        step = min(spare[link] / count for link, count in users.items())
        step = min(step, min(s.cap - s.rate for s in active))
        for stream in active:
            stream.rate += step
        for link, count in users.items():
            spare[link] -= step * count
        saturated = {link for link, left in spare.items() if left <= 1e-6 * link_capacity[link]}
        active = [
            s
            for s in active
            if s.cap - s.rate > 1e-9 * s.cap
            and ("out", s.source) not in saturated
            and ("in", s.target) not in saturated
        ]
