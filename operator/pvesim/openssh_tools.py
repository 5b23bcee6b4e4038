"""What running real OpenSSH needs: finding and checking the binaries, keys, free ports, and a
spawner whose children die with pvesim (used by `pvesim.openssh`)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

INSTALL_HINT = (
    "`python3 hack/provision.py path sshd` installs Debian's openssh-server and "
    "openssh-client, or name an sshd in PROXMIGRATE_SSHD"
)


def sshd_path() -> str:
    """PROXMIGRATE_SSHD (hack/provision.py's variable), else sshd on PATH or in /usr/sbin;
    absolute, as sshd must be to re-exec itself (sshd.c)."""
    given = os.environ.get("PROXMIGRATE_SSHD")
    found = given or shutil.which("sshd") or "/usr/sbin/sshd"
    return os.path.abspath(found)


class OpenSshMissing(OSError):
    """sshd, ssh, ssh-keygen or setpriv is not installed."""


def openssh_version() -> tuple[int, int]:
    """`sshd -V` (OpenSSH >= 9.1; older ones print the version in their usage error)."""
    sshd = sshd_path()
    out = subprocess.run([sshd, "-V"], capture_output=True, text=True, check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    if not found:
        raise OpenSshMissing(f"cannot tell the OpenSSH version of {sshd}: {out.stderr.strip()}")
    return int(found[1]), int(found[2])


def check_installed() -> None:
    missing = [p for p in (sshd_path(),) if not os.access(p, os.X_OK)]
    missing += [t for t in ("ssh", "ssh-keygen", "setpriv") if shutil.which(t) is None]
    if missing:
        raise OpenSshMissing(f"--sshd openssh needs {', '.join(missing)}: {INSTALL_HINT}")


class Spawner:
    """Starts every child from one thread that lives as long as pvesim: PR_SET_PDEATHSIG fires
    when the *thread* that forked the child ends, so short request threads must not fork."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[list[str], dict[str, object], queue.Queue[object]]]
        self._jobs = queue.Queue()
        threading.Thread(target=self._run, name="pvesim-spawner", daemon=True).start()

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
        reply: queue.Queue[object] = queue.Queue()
        self._jobs.put((["setpriv", "--pdeathsig", "TERM", "--", *argv], kwargs, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, subprocess.Popen)
        return result

    def _run(self) -> None:
        while True:
            argv, kwargs, reply = self._jobs.get()
            try:
                reply.put(subprocess.Popen(argv, text=True, **kwargs))  # type: ignore[call-overload]
            except OSError as exc:
                reply.put(exc)


def user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
