"""A `Cluster` on the real clock with real sshd, for code that drives it itself through
`advance_to`/`run_until_idle` (the bench's contenders): `advance_to(t)` waits
until the scaled real clock reaches `t` and meanwhile runs, in this thread, what the real ssh
logins post (pvesim/openssh.py). `pvesim serve` needs none of this: its clock thread does it.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pvesim.clock import ScaledClock
from pvesim.model import Cluster
from pvesim.openssh import OpenSsh

POLL = 0.05  # real seconds between looks at the clock while nothing is posted


class RealTime:
    def __init__(self, cluster: Cluster, scale: float = 1.0) -> None:
        self.cluster = cluster
        self.workdir = Path(tempfile.mkdtemp(prefix="pvesim-realtime-"))  # keys, sshd logs
        self.clock = ScaledClock(cluster.now, scale)
        self._inbox: queue.Queue[Callable[[], None]] = queue.Queue()
        self._advance = cluster.advance_to
        self.ssh = OpenSsh(self.workdir, self._inbox.put)
        try:
            for node in cluster.nodes.values():
                self.ssh.start_node(node.name, node.index, node.sshd.params)
        except BaseException:
            self.close()
            raise
        cluster.ssh_transport = self.ssh
        # the drivers call these on the cluster: route them through the real clock
        cluster.advance_to = self.advance_to  # type: ignore[method-assign]
        cluster.run_until_idle = self.run_until_idle  # type: ignore[method-assign]

    def advance_to(self, t: float) -> None:
        while True:
            now = self.clock.now()
            if now >= t and self._inbox.empty():
                break
            try:
                callback: Callable[[], None] | None = self._inbox.get(
                    timeout=min(POLL, max(0.0, (t - now) / self.clock.scale))
                )
            except queue.Empty:
                callback = None
            self._advance(min(self.clock.now(), t))
            if callback is not None:
                callback()
        self._advance(t)

    def run_until_idle(self, limit: float = 86_400.0) -> None:
        """Until no event is due and no real ssh login is on its way."""
        end = self.cluster.now + limit
        while self.cluster.now < end:
            due = self.cluster.next_event_time()
            if due is None and not self.ssh.connecting and self._inbox.empty():
                return
            self.advance_to(min(end, due if due is not None else self.clock.now() + POLL))

    def close(self) -> None:
        self.ssh.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
