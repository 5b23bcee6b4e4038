"""The model's ssh connections through an `SshTransport` (what `--sshd openssh` plugs in):
every session is closed when PVE's command ends, the mtunnel only after the transfer, and a
failed login puts the client's own stderr in the task log. The transport is faked here; the
real one is exercised in tests/e2e/test_real_sshd.py."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from pvesim.model import Cluster, from_config
from pvesim.model.params import MaxStartups, SshdParams
from pvesim.model.process import SshResult
from pvesim.model.sshd import Sshd


@dataclass
class FakeSession:
    command: str
    cluster: Cluster
    closed_at: float | None = None

    def close(self) -> None:
        assert self.closed_at is None, f"{self.command} closed twice"
        self.closed_at = self.cluster.now


@dataclass
class FakeTransport:
    cluster: Cluster
    fail: set[str] = field(default_factory=set)  # commands whose login sshd drops
    sessions: list[FakeSession] = field(default_factory=list)

    def connect(
        self, source: str, target: str, command: str, done: Callable[[SshResult], None]
    ) -> None:
        if command in self.fail:
            lines = ("kex_exchange_identification: read: Connection reset by peer",)
            self.cluster.schedule(0.01, done, SshResult(False, lines))
            return
        session = FakeSession(command, self.cluster)
        self.sessions.append(session)
        self.cluster.schedule(0.3, done, SshResult(True, session=session))


def _cluster() -> tuple[Cluster, FakeTransport]:
    cluster = from_config(
        {
            "nodes": [{"name": "pve1"}, {"name": "pve2"}],
            "vms": [{"vmid": 100, "node": "pve1", "memory_gib": 4, "used_gib": 2}],
        }
    )
    transport = FakeTransport(cluster)
    cluster.ssh_transport = transport
    return cluster, transport


def test_every_session_is_closed_and_the_tunnel_only_after_the_transfer() -> None:
    cluster, transport = _cluster()
    cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.run_until_idle()
    (record,) = cluster.migrations[100]
    assert record.outcome == "ok"
    commands = [s.command for s in transport.sessions]
    assert commands == [
        "/bin/true",
        "qm start 100",
        "qm mtunnel",
        "rm -f /run/qemu-server/100.migrate",
        "qm unlock 100",
    ]
    assert all(s.closed_at is not None for s in transport.sessions)
    by_command = {s.command: s for s in transport.sessions}
    assert record.transfer_end is not None
    tunnel_closed = by_command["qm mtunnel"].closed_at
    assert tunnel_closed is not None and tunnel_closed >= record.transfer_end
    start_closed = by_command["qm start 100"].closed_at
    assert start_closed is not None and start_closed >= record.start + 1.0  # qm start >= 1 s
    assert cluster.nodes["pve2"].sshd.connections == 5
    assert cluster.nodes["pve2"].sshd.drops == 0


def test_a_dropped_login_fails_the_step_with_the_transport_stderr() -> None:
    cluster, transport = _cluster()
    transport.fail.add("qm start 100")
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.run_until_idle()
    (record,) = cluster.migrations[100]
    assert (record.outcome, record.reason) == ("failed", "ssh_drop:qm start")
    log = cluster.task(str(upid)).lines
    assert any(
        line.endswith("[pve2] kex_exchange_identification: read: Connection reset by peer")
        for line in log
    ), log
    assert cluster.nodes["pve2"].sshd.drops == 1
    assert all(s.closed_at is not None for s in transport.sessions)


def test_a_stop_while_logging_in_closes_the_late_session() -> None:
    cluster, transport = _cluster()
    upid = cluster.migrate("pve1", 100, "pve2", online=True)
    cluster.advance_to(cluster.now + 0.2)  # the first ssh is logging in
    cluster.stop_task(str(upid))
    cluster.run_until_idle()
    assert transport.sessions and all(s.closed_at is not None for s in transport.sessions)


def _finish_times(sshd: Sshd, arrivals: list[float]) -> list[float]:
    """Drive `sshd`'s handshakes as the cluster does: when each is authenticated."""
    rng = random.Random(1)
    authenticated: list[float] = []
    now = 0.0
    todo = sorted(arrivals)
    while todo or sshd.logins:
        step = sshd.next_change()
        if todo and (step is None or todo[0] <= now + step):
            now = todo.pop(0)
            assert sshd.admit("src", now, rng)
            sshd.begin(now, rng, lambda: None)
            continue
        assert step is not None
        now += step
        authenticated += [now for _done in sshd.advance(now)]
    return authenticated


def _sshd() -> Sshd:
    """Default handshake figures, no spread, and room for every connection."""
    params = replace(SshdParams(), handshake_sigma=0.0)
    return Sshd(replace(params, max_startups=MaxStartups(100, 30, 200)))


def test_a_crowd_of_handshakes_shares_the_cpu_and_authenticates_together() -> None:
    params = SshdParams()
    lone = _finish_times(_sshd(), [0.0])
    assert lone == [pytest.approx(params.handshake_median)]
    crowd = _finish_times(_sshd(), [0.0] * 8)
    together = params.handshake_median * (1 + 7 / params.handshake_contention)
    assert crowd == [pytest.approx(together)] * 8
    sshd = _sshd()
    _finish_times(sshd, [0.0] * 8)
    assert sshd.peak_pending == 8 and sshd.pending == 0


def test_a_late_arrival_slows_the_handshakes_already_running() -> None:
    params = SshdParams()
    alone = _finish_times(_sshd(), [0.0])
    first = _finish_times(_sshd(), [0.0, params.handshake_median / 2])
    assert min(first) > alone[0]


def test_yaml_sshd_must_be_model_or_openssh(tmp_path: Path) -> None:
    from pvesim.cli import build_cluster, parse_args

    config = tmp_path / "c.yaml"
    config.write_text("sshd: real\nnodes: [{name: pve1}]\n")
    with pytest.raises(ValueError, match="sshd: 'real' is neither 'model' nor 'openssh'"):
        build_cluster(parse_args(["serve", "--config", str(config)]))
    config.write_text("sshd: openssh\nnodes: [{name: pve1}]\n")
    args = parse_args(["serve", "--config", str(config), "--sshd", "model"])
    build_cluster(args)
    assert args.sshd == "model"  # the flag wins over the YAML
