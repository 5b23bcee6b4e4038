"""How fast a node's clock runs against ours, from its task logs' stamps (pure, no I/O).

A task log's rates and stamps are in the node's time: `Z/s` of `migration active,
transferred X of Y VM-state, Z/s` (qemu-server `src/PVE/QemuMigrate.pm` phase2) and every
line's `%F %H:%M:%S` stamp (pve-guest-common `src/PVE/AbstractMigrate.pm` msg2text,
`localtime`, whole seconds). A real node's clock runs at our rate, at an offset we do not
know (its time zone, NTP's residue); pvesim's runs `--time-scale` times faster. So the
runtime turns a log's seconds into ours by the node's rate, bounded from what it already
reads, with no extra request:
- a task's first stamped line is written after we sent its request, so at that moment the
  node's clock was below that stamp + 1 s (`at_most`);
- a line read at some moment was written by then, so the node's clock was at least its
  stamp then (`at_least`).
Any such pair, earlier and later, bounds the rate from one side; the rate used is the one
closest to ours (1) within the bounds: 1 on real PVE, pvesim's scale once its stamps run
ahead of our clock. Stamps from one node only: each keeps its own time zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STAMP_RESOLUTION = 1.0  # log stamps are whole seconds, rounded down
# Observations kept per node and kind: enough for bounds over the last minutes of a drain,
# few enough that a clock stepped (NTP, a DST change in local stamps) ages out.
KEPT = 32

Point = tuple[float, float]  # (our time, node clock bound), each in seconds


@dataclass
class NodeClock:
    """Bounds on one node's clock at moments of ours; `rate` is node seconds per ours."""

    at_most: list[Point] = field(default_factory=list)
    at_least: list[Point] = field(default_factory=list)
    # `bounds()` as of the last observation: every log read asks for the rate, only some
    # add an observation, and each computation pairs up to KEPT x KEPT points
    _bounds: tuple[float, float] = field(default=(0.0, math.inf), init=False)

    def requested(self, sent_at: float, first_stamp: float) -> None:
        """A task requested at `sent_at` (ours) logged its first line at `first_stamp`."""
        self._add(self.at_most, (sent_at, first_stamp + STAMP_RESOLUTION))

    def read(self, read_at: float, stamp: float) -> None:
        """A line stamped `stamp` was in a log read at `read_at` (ours)."""
        self._add(self.at_least, (read_at, stamp))

    def _add(self, points: list[Point], point: Point) -> None:
        points.append(point)
        points.sort()
        del points[:-KEPT]
        low, high = self._bounds = self._pair_up()
        if low > high:  # the node's clock was stepped: only the newest observation holds
            self.at_most[:] = [point] if points is self.at_most else []
            self.at_least[:] = [point] if points is self.at_least else []
            self._bounds = self._pair_up()

    def bounds(self) -> tuple[float, float]:
        """The node's rate as (at least, at most) from every earlier/later pair of bounds."""
        return self._bounds

    def _pair_up(self) -> tuple[float, float]:
        low, high = 0.0, math.inf
        for t_most, most in self.at_most:
            for t_least, least in self.at_least:
                if t_least > t_most:
                    low = max(low, (least - most) / (t_least - t_most))
                elif t_most > t_least:
                    high = min(high, (most - least) / (t_most - t_least))
        return low, high

    @property
    def rate(self) -> float:
        """Node seconds per second of ours: the rate closest to ours the stamps allow."""
        low, high = self.bounds()
        return min(max(1.0, low), high)


@dataclass
class NodeClocks:
    """One `NodeClock` per node of a cluster."""

    by_node: dict[str, NodeClock] = field(default_factory=dict)

    def of(self, node: str) -> NodeClock:
        return self.by_node.setdefault(node, NodeClock())

    def rate(self, node: str) -> float:
        """`node`'s seconds per second of ours (1 until its stamps tell otherwise)."""
        clock = self.by_node.get(node)
        return 1.0 if clock is None else clock.rate
