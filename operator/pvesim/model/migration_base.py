"""What every step of a `qmigrate` worker uses: its request and ground-truth record, remote
commands as PVE runs them over ssh, and AbstractMigrate's signal handling.

Sources: pve-guest-common `src/PVE/AbstractMigrate.pm` (cmd_quiet, cmd_logerr, $eval_int,
migrate), pve-common `src/PVE/Cmd.pm` (run), pve-cluster `src/PVE/SSHInfo.pm`
(ssh_info_to_command); docs/reference/proxmox.md #task-log-wording, #stopping-a-task.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pvesim.model.network import Stream
from pvesim.model.process import (
    ChildKilled,
    Command,
    Interrupted,
    Session,
    Sleep,
    SshCall,
    Worker,
)
from pvesim.model.tasklog import Task, duration

if TYPE_CHECKING:
    from pvesim.model.cluster import Cluster
    from pvesim.model.entities import VM

INTERRUPTED = "interrupted by signal"  # AbstractMigrate.pm $eval_int's handler


class StepFailed(Exception):
    """A phase failed; `reason` is the ground-truth label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class CommandResult:
    """How a remote command ended: `error` as pve-common `PVE/Cmd.pm` run words it."""

    ok: bool
    error: str = ""  # `exit code 255` | `got signal 15`
    stderr: tuple[str, ...] = ()


@dataclass
class MigrationRequest:
    vmid: int
    source: str
    target: str
    online: bool
    secure: bool = True
    network: str | None = None  # migration network CIDR
    bwlimit_kib: int | None = None
    with_local_disks: bool = False
    by_ha: bool = False
    force: bool = False  # root only; lets prepare() pass local devices


@dataclass
class MigrationRecord:
    """Ground truth about one executed migration."""

    upid: str
    vmid: int
    source: str
    target: str
    mode: str  # secure | insecure | offline
    start: float
    end: float | None = None
    outcome: str | None = None  # ok | failed | problems | killed
    reason: str | None = None
    vm_moved: bool = False
    transfer_start: float | None = None  # RAM stream open ...
    transfer_end: float | None = None  # ... and closed
    ssh_connections: list[str] = field(default_factory=list)
    target_qemu_left: bool = False  # an incoming QEMU nobody stopped (SIGKILL, failed qm stop)


Step = Generator[Command, Any, CommandResult]


class MigrationBase:
    """The state of one migration worker and the tools its steps share."""

    def __init__(self, cluster: Cluster, task: Task, vm: VM, request: MigrationRequest) -> None:
        self.cluster = cluster
        self.task = task
        self.vm = vm
        self.req = request
        self.started = cluster.now
        self.stream: Stream | None = None
        self.port: int | None = None
        self.nodeip = cluster.nodes[request.target].ip  # SSHInfo get_ssh_info
        self.delayed_interrupt = False
        self.tunnel = False  # the `qm mtunnel` ssh child is up
        self.held: list[Session] = []  # real ssh sessions open (pvesim/openssh.py)
        mode = "offline" if not request.online else ("secure" if request.secure else "insecure")
        self.record = MigrationRecord(
            str(task.upid), vm.vmid, request.source, request.target, mode, cluster.now
        )

    # -- helpers ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.task.log(self.cluster.now, message)

    def ssh_prefix(self, ip: str | None = None) -> str:
        """pve-cluster SSHInfo.pm ssh_info_to_command as PVE::Tools::cmd2string prints it
        (String::ShellQuote quotes every word with `=`). The known_hosts options exist since
        pve-cluster 8.0.6 (PVE 8.1, commit 1f3febd "fix #4886: SSH: pin node's host key"),
        i.e. on every version pvesim plays."""
        name = self.req.target
        return (
            f"/usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias={name}' "
            f"-o 'UserKnownHostsFile=/etc/pve/nodes/{name}/ssh_known_hosts' "
            f"-o 'GlobalKnownHostsFile=none' root@{ip or self.nodeip}"
        )

    def elapsed(self) -> str:
        return duration(self.cluster.now - self.started)

    def remote(
        self,
        command: str,
        runtime: float = 0.0,
        on_login: Callable[[], None] | None = None,
        hold: bool = False,
    ) -> Step:
        """One ssh connection running `command` for `runtime` s after login. A SIGTERM the
        worker only logs still kills the ssh child (`got signal 15`); one that dies raises
        `Interrupted` out of here. With a real sshd the session ends after `runtime`, or with
        `hold` (the mtunnel) when `close_held` runs."""
        self.record.ssh_connections.append(command)
        session = None
        try:
            result = yield SshCall(self.req.source, self.req.target, command)
            if not result.ok:
                return CommandResult(False, "exit code 255", result.stderr)
            session = result.session
            if on_login is not None:
                on_login()
            if runtime > 0:
                yield Sleep(runtime, child=command)
        except ChildKilled:
            return CommandResult(False, "got signal 15")
        finally:
            if session is not None:
                self.held.append(session)
                if not hold:
                    self.close_held()
        return CommandResult(True)

    def close_held(self) -> None:
        """End the real ssh sessions still open (the tunnel's, or one a stop cut short)."""
        while self.held:
            self.held.pop().close()

    def cmd_quiet(self, command: str) -> Step:
        """AbstractMigrate.pm cmd_quiet/cmd_logerr: on failure `# <ssh command>`, then the
        captured output, timestamped (with `errmsg`, run_command keeps the last stderr line
        for the error text instead)."""
        try:
            result = yield from self.remote(command)
        except Interrupted:
            self.log(f"# {self.ssh_prefix()} {command}")
            raise
        if not result.ok:
            self.log(f"# {self.ssh_prefix()} {command}")
            for line in result.stderr:
                self.log(line)
        return result

    # -- signals (AbstractMigrate.pm migrate and $eval_int) ---------------------------------
    def _die(self) -> BaseException:
        self.delayed_interrupt = False
        return Interrupted(INTERRUPTED)

    def _delay(self) -> None:
        self.log("ERROR: received interrupt - delayed")
        self.delayed_interrupt = True

    def eval_int(self, body: Worker) -> Worker:
        """A step that a signal may cut: inside, SIGTERM dies `interrupted by signal`; a
        signal that arrived while delayed dies as the step begins."""
        if self.delayed_interrupt:
            self.delayed_interrupt = False
            raise Interrupted(INTERRUPTED)
        process = self.task.process
        assert process is not None
        process.sigterm = self._die
        try:
            yield from body
        finally:
            process.sigterm = self._delay


def failure_reason(result: CommandResult, drop: str) -> str:
    return "stopped" if result.error == "got signal 15" else drop
