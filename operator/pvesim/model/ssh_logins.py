"""A worker's ssh login to a node: refused when the node is offline, then admitted or dropped
by the target's sshd model (model/sshd.py), or made for real (pvesim/openssh.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pvesim.model.entities import Node
from pvesim.model.process import Process, SshCall, SshResult

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster

# Client wording of an sshd drop (docs/reference/proxmox.md#task-log-wording); 2:1 closed vs reset.
_DROP_CLOSED = (
    "kex_exchange_identification: Connection closed by remote host",
    "Connection closed by {ip} port 22",
)
_DROP_RESET = (
    "kex_exchange_identification: read: Connection reset by peer",
    "Connection reset by {ip} port 22",
)


class SshLogins:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def connect(self, process: Process, call: SshCall, token: int) -> None:
        target = self.cluster.nodes[call.target]
        if not target.online:
            line = f"ssh: connect to host {target.ip} port 22: No route to host"
            # ARP timeout
            self.cluster.schedule(3.0, process.wake, token, SshResult(False, (line,)))
            return
        if self.cluster.ssh_transport is not None:
            self._real(target, process, call, token)
            return
        client_start = target.sshd.params.client_start_max
        if client_start > 0:
            delay = self.cluster.rng.uniform(0.0, client_start)
            self.cluster.schedule(delay, self._admit, target, process, call, token)
        else:
            self._admit(target, process, call, token)

    def _admit(self, target: Node, process: Process, call: SshCall, token: int) -> None:
        """The client's TCP connect reaches sshd (model/sshd.py; calibrated against real
        sshd: docs/pvesim.md "Real OpenSSH")."""
        source_ip = self.cluster.nodes[call.source].ip
        if not target.sshd.admit(source_ip, self.cluster.now, self.cluster.rng):
            wording = _DROP_CLOSED if self.cluster.rng.random() < 2 / 3 else _DROP_RESET
            lines = tuple(line.format(ip=target.ip) for line in wording)
            self.cluster.schedule(0.005, process.wake, token, SshResult(False, lines))
            return
        target.sshd.begin(
            self.cluster.now, self.cluster.rng, lambda: process.wake(token, SshResult(True))
        )
        self._next(target)

    def _real(self, target: Node, process: Process, call: SshCall, token: int) -> None:
        """A real ssh login (pvesim/openssh.py); its result arrives on the real clock."""
        assert self.cluster.ssh_transport is not None
        target.sshd.connections += 1

        def done(result: SshResult) -> None:
            if not result.ok:
                target.sshd.drops += 1
            if result.session is not None and (process.done or process.token != token):
                result.session.close()  # the worker was stopped meanwhile: nobody holds it
            process.wake(token, result)

        self.cluster.ssh_transport.connect(call.source, call.target, call.command, done)

    def _next(self, target: Node) -> None:
        """Wake `_progress` when the next login of `target` ends a phase."""
        delay = target.sshd.next_change()
        if delay is not None:
            self.cluster.schedule(delay, self._progress, target, target.sshd.generation)

    def _progress(self, target: Node, generation: int) -> None:
        if generation != target.sshd.generation:
            return  # a login began or ended since: a later wake-up is scheduled
        for done in target.sshd.advance(self.cluster.now):
            self.cluster.schedule(0.0, done)
        self._next(target)
