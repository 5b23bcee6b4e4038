"""Real OpenSSH in the loop: one `sshd` per simulated node on loopback, and every SSH connection
of the migration model made by a real `ssh -o BatchMode=yes` client (docs/pvesim.md "Real
OpenSSH").

Each sshd listens on 127.0.0.1 at a port of its own, with its own host key, one authorized key
made for this run, `MaxStartups`/`LoginGraceTime` from the node's `SshdParams` and, on PVE 9
nodes, `PerSourcePenalties` when the installed sshd has it (OpenSSH >= 9.8, servconf.c). A
client binds the source node's own loopback address (127.1.x.y), so sshd sees one source per
node as PVE's would. The forced command prints one line and holds the session until the model
closes it, so "logged in" is the moment sshd ran the command (authentication done, the
MaxStartups slot freed: sshd.c, the child's startup_pipe write after authentication).

Time rule: sshd and ssh run on the real clock. A handshake that takes t real seconds ends
t x time-scale simulated seconds after it began; a session the model holds for s simulated
seconds (`qm start`'s run, the mtunnel until the transfer ends) is held s / time-scale real
seconds. Pre-authentication concurrency, and so MaxStartups, is therefore faithful at any
scale only for connections opened together; calibrate at --time-scale 1.

No orphans: sshd and every ssh client are started through `setpriv --pdeathsig TERM` from one
long-lived thread, so they get SIGTERM when pvesim dies (even by SIGKILL); sshd runs in its own
process group, which `stop` kills whole.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pvesim.model.params import SshdParams
from pvesim.model.process import SshResult
from pvesim.openssh_tools import (
    OpenSshMissing,
    Spawner,
    check_installed,
    free_port,
    keygen,
    openssh_version,
    sshd_path,
    user,
)

if TYPE_CHECKING:
    from pvesim.server import Simulator

READY = "pvesim-session"


def source_address(index: int) -> str:
    """The loopback address a node's ssh clients bind: 127.1.0.<index> (and on)."""
    return str(ipaddress.IPv4Address("127.1.0.0") + index)


@dataclass
class NodeSshd:
    name: str
    index: int
    port: int
    process: subprocess.Popen[str]
    log: Path


class Session:
    """One real ssh connection running the forced command; `close` ends it (stdin EOF)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.began = time.monotonic()
        self.login_seconds: float | None = None  # connect to forced command running

    def close(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()


class OpenSsh:
    """The sshd processes of one pvesim and the client side the model's `SshCall`s use."""

    def __init__(self, workdir: Path, post: Callable[[Callable[[], None]], None]) -> None:
        check_installed()
        self.workdir = workdir / "openssh"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.post = post  # runs a callback in the model under its lock
        self.version = openssh_version()
        self.nodes: dict[str, NodeSshd] = {}
        self.sources: dict[str, int] = {}
        self.notes: list[str] = []  # one line each, for the caller to print
        self.handshakes: list[float] = []  # real seconds, connect to logged in
        self.connecting = 0  # logins whose result is not posted yet
        self._count = threading.Lock()
        self._spawner = Spawner()
        self._user_key = self.workdir / "id_ed25519"
        keygen(self._user_key, "pvesim-run")
        (self.workdir / "authorized_keys").write_text(
            self._user_key.with_suffix(".pub").read_text()
        )
        self._known_hosts = self.workdir / "known_hosts"
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep chroot

    @property
    def has_penalties(self) -> bool:
        return self.version >= (9, 8)  # PerSourcePenalties: OpenSSH 9.8 (servconf.c)

    def start_node(self, name: str, index: int, params: SshdParams) -> NodeSshd:
        host_key = self.workdir / f"host_{name}"
        keygen(host_key, name)
        pub = host_key.with_suffix(".pub").read_text().split()
        with self._known_hosts.open("a") as known:  # HostKeyAlias=<node>, as PVE pins it
            known.write(f"{name} {pub[0]} {pub[1]}\n")
        self.sources[name] = index
        port = free_port()
        config = self.workdir / f"sshd_{name}.conf"
        config.write_text(self._config(port, host_key, params))
        log = self.workdir / f"sshd_{name}.log"
        process = self._spawner.popen(
            [sshd_path(), "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            process_group=0,
        )
        node = NodeSshd(name, index, port, process, log)
        self.nodes[name] = node
        _wait_listening(node)
        return node

    def _config(self, port: int, host_key: Path, params: SshdParams) -> str:
        lines = [
            f"ListenAddress 127.0.0.1:{port}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
            f"MaxStartups {params.max_startups}",
            f"LoginGraceTime {int(params.login_grace_time)}",
            # cheap and local: no PAM, no DNS, keys only, nothing but the forced command
            "UsePAM no",
            "UseDNS no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "PidFile none",
            "LogLevel INFO",
            f"ForceCommand echo {READY}; exec cat >/dev/null",
            # sshd runs the command through the user's shell, and bash sources ~/.bashrc
            # when started by sshd as a top-level shell (bash shell.c run_startup_files,
            # SSH_SOURCE_BASHRC, on in Debian's build); SHLVL=1 makes it level 2. A PVE
            # node's root has Debian's stock .bashrc (all comments); a developer's may run
            # `pyenv init` and the like: 0.5 s per login measured here, several seconds
            # under load, none of it PVE's
            "SetEnv SHLVL=1",
        ]
        if self.has_penalties:
            lines.append(f"PerSourcePenalties {'yes' if params.per_source_penalties else 'no'}")
        elif params.per_source_penalties:
            note = (
                f"OpenSSH {self.version[0]}.{self.version[1]} has no PerSourcePenalties "
                "(9.8+): PVE 9 nodes run without it"
            )
            if note not in self.notes:
                self.notes.append(note)
        return "\n".join(lines) + "\n"

    def connect(
        self, source: str, target: str, command: str, done: Callable[[SshResult], None]
    ) -> None:
        """Open a real ssh source -> target running `command`; `done` runs (through `post`)
        once logged in or failed, with ssh's own stderr lines when it failed."""
        node = self.nodes[target]
        argv = [
            "ssh",
            "-F",
            "none",
            "-e",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            f"HostKeyAlias={target}",
            "-o",
            f"UserKnownHostsFile={self._known_hosts}",
            "-o",
            "GlobalKnownHostsFile=none",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(self._user_key),
            "-b",
            source_address(self.sources[source]),
            "-p",
            str(node.port),
            f"{user()}@127.0.0.1",
            command,
        ]
        process = self._spawner.popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        session = Session(process)
        with self._count:
            self.connecting += 1
        threading.Thread(target=self._watch, args=(session, done), daemon=True).start()

    def _watch(self, session: Session, done: Callable[[SshResult], None]) -> None:
        process = session.process
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        if first.strip() == READY:
            session.login_seconds = time.monotonic() - session.began
            self.handshakes.append(session.login_seconds)
            self._posted(lambda: done(SshResult(True, session=session)))
            process.stdout.read()
            process.wait()
            return
        lines = tuple(line for line in process.stderr.read().splitlines() if line)
        process.wait()
        self._posted(lambda: done(SshResult(False, lines)))

    def _posted(self, callback: Callable[[], None]) -> None:
        self.post(callback)
        with self._count:
            self.connecting -= 1

    def stop(self) -> None:
        """SIGTERM every sshd's process group (listener and its per-connection children)."""
        for node in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGTERM)
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()


def _wait_listening(node: NodeSshd, timeout: float = 10.0) -> None:
    """sshd logs `Server listening on ...` once bound (sshd.c server_listen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            err = node.process.stderr.read() if node.process.stderr else ""
            log = node.log.read_text() if node.log.exists() else ""
            raise OpenSshMissing(f"sshd for {node.name} exited: {(err + log).strip()}")
        if node.log.exists() and "Server listening on" in node.log.read_text():
            return
        time.sleep(0.02)
    raise OpenSshMissing(f"sshd for {node.name} did not listen within {timeout:.0f} s")


def attach(sim: Simulator, workdir: Path) -> OpenSsh:
    """Start one sshd per node of `sim`'s cluster and route the model's ssh through them."""

    def post(callback: Callable[[], None]) -> None:
        with sim.lock:
            sim.sync()
            callback()

    ssh = OpenSsh(workdir, post)
    try:
        for node in sim.cluster.nodes.values():
            ssh.start_node(node.name, node.index, node.sshd.params)
    except BaseException:
        ssh.stop()
        raise
    sim.cluster.ssh_transport = ssh
    return ssh
