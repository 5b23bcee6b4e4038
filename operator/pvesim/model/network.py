"""Max-min fair sharing of node links among migration streams (progressive filling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster


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


class Links:
    """The streams on the cluster's node links; every start or end shares them out again."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._streams: list[Stream] = []

    def _capacity(self) -> dict[tuple[str, str], float]:
        efficiency = self.cluster.params.network.link_efficiency
        caps: dict[tuple[str, str], float] = {}
        for node in self.cluster.nodes.values():
            bytes_per_s = node.nic_gbit * 1e9 / 8 * efficiency
            caps[("out", node.name)] = bytes_per_s
            caps[("in", node.name)] = bytes_per_s
        return caps

    def _reshare(self) -> None:
        """Progressive filling again on every stream start/end."""
        if not self._streams:
            return
        for stream in self._streams:
            stream.settle(self.cluster.now)
        involved = {s.source for s in self._streams} | {s.target for s in self._streams}
        caps = {k: v for k, v in self._capacity().items() if k[1] in involved}
        fair_share(self._streams, caps)

    def open(self, source: str, target: str, cap: float) -> Stream:
        stream = Stream(source, target, cap, updated_at=self.cluster.now)
        self._streams.append(stream)
        self._reshare()
        return stream

    def close(self, stream: Stream) -> None:
        stream.settle(self.cluster.now)
        self._streams.remove(stream)
        self._reshare()

    def sent(self, stream: Stream) -> float:
        return stream.sent_at(self.cluster.now)
