"""Why a migration failed, read from its task's exit status and log (pure, no I/O).

The wording matched here is PVE's own (qemu-server `QemuMigrate.pm`, pve-guest-common
`AbstractMigrate.pm`, OpenSSH client stderr), collected with their subs in
docs/reference/proxmox.md (#task-log-wording, #api-refusals-before-a-task-exists). The
verdict drives retries: only transient reasons are retried, and `vm_moved` tells the
operator to check where the VM runs before doing anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.pve.failure_rule import Rule
from proxmigrate.pve.failure_rule import rule as _rule

# OpenSSH's own words when sshd closes or resets a connection before login (kex.c
# `kex_exchange_identification`, `ssh_exchange_identification` in older OpenSSH; packet.c
# `sshpkt_fatal`: "Connection closed|reset by <host> port <n>"). ssh exits 255 on these, but a
# remote command that fails also ends `failed: exit code 255` (a Perl `die` exits 255, e.g.
# pve-cluster `PVE/CLI/pvecm.pm` mtunnel), so only this wording marks a drop.
_SSH_DROP = r"(?:kex|ssh)_exchange_identification:|Connection (?:closed|reset) by \S+ port \d+"

# Checked against every line, in this order; the first rule with a matching line decides.
_LOCK = _rule(r"VM is locked \((?P<lock>[\w-]+)\)", Reason.VM_LOCKED, True, FailurePhase.PREPARE)
_LOCK_FILE = _rule(
    r"can't lock file '[^']*' - got timeout", Reason.TIMEOUT, True, FailurePhase.PREPARE
)
_NO_NODE = _rule(r"no such cluster node", Reason.TARGET_OFFLINE, False)
_LOCAL_DEVICES = _rule(
    r"can't migrate VM which uses local devices",
    Reason.LOCAL_RESOURCES,
    False,
    FailurePhase.PREPARE,
)
_LOCAL_DISK = _rule(
    r"can't migrate local disk|Problem found while scanning volumes",
    Reason.LOCAL_RESOURCES,
    False,
    FailurePhase.PHASE1,
)
_STORAGE = _rule(r"storage '[^']+' is not available on node", Reason.STORAGE_UNAVAILABLE, False)

_LOG_RULES: tuple[Rule, ...] = (
    # End phase: the config is on the target already; the target config may keep the lock.
    # qemu-server `PVE/QemuMigrate.pm` phase3_cleanup runs `qm unlock` over ssh with
    # `errmsg => "failed to clear migrate lock"`: pve-common `PVE/Cmd.pm` run_command then
    # dies with ssh's last stderr line after it, so a drop's wording is on that line.
    _rule(
        r"failed to clear migrate lock: .*(?:" + _SSH_DROP + ")",
        Reason.SSH_DROPPED,
        True,
        FailurePhase.END,
        True,
        "migrate",
    ),
    _rule(
        r"failed to clear migrate lock", Reason.UNKNOWN, False, FailurePhase.END, True, "migrate"
    ),
    _rule(
        # pve-guest-common `PVE/Tunnel.pm` finish_tunnel: `rm -f` of the tunnel's sockets on
        # the target after the transfer, through pve-common `PVE/Tools.pm` run_command, which
        # copies ssh's stderr into the log unprefixed before the error. PVE quotes options
        # inside the command: `-o 'BatchMode=yes'`, hence `.*`.
        r"command '/usr/bin/ssh .* rm -f /run/qemu-server/\d+\.migrate' failed: exit code 255",
        Reason.SSH_DROPPED,
        True,
        FailurePhase.PHASE3,
        True,
        after=_SSH_DROP,
    ),
    _rule(r"unable to find free port", Reason.PORT_UNAVAILABLE, True, FailurePhase.PHASE2),
    # ssh refusing to trust or log in is configuration, not sshd load.
    _rule(
        r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
        r"Permission denied \(publickey",
        Reason.UNKNOWN,
        False,
    ),
    _rule(_SSH_DROP, Reason.SSH_DROPPED, True),
    _rule(
        r"ssh: connect to host \S+ port \d+: "
        r"(?:Connection refused|No route to host|Connection timed out|Network is unreachable)",
        Reason.TARGET_OFFLINE,
        True,
    ),
    # pve-cluster `PVE/CLI/pvecm.pm` mtunnel on the target, asked by `PVE/SSHInfo.pm`
    # get_ssh_info for its address in the migration network (pve-guest-common
    # `PVE/AbstractMigrate.pm` migrate, before the task logs anything). No address, or
    # several, in that network: it dies (the task: `command '/usr/bin/ssh ...
    # -get_migration_ip' failed: exit code 255`). Without quorum it prints `no quorum`
    # instead, and get_ssh_info dies `failed to get ip for node ...`: that one passes.
    _rule(r"could not get migration ip", Reason.TARGET_OFFLINE, False, FailurePhase.PREPARE),
    _rule(
        r"failed to get ip for node '[^']+' in network",
        Reason.TARGET_OFFLINE,
        True,
        FailurePhase.PREPARE,
    ),
    _LOCK,
    _LOCK_FILE,
    _LOCAL_DEVICES,
    _LOCAL_DISK,
    _STORAGE,
    _NO_NODE,
    _rule(r"interrupted by signal|received interrupt", Reason.CANCELLED, False),
    _rule(r"got timeout|timed out|timeout waiting", Reason.TIMEOUT, True),
)

_API_RULES: tuple[Rule, ...] = (
    _LOCK,
    _LOCK_FILE,
    _NO_NODE,
    _LOCAL_DEVICES,
    _LOCAL_DISK,
    _STORAGE,
    _rule(r"no quorum", Reason.API_ERROR, True),
    # PVE answers these with HTTP 500 too, yet repeating the call cannot succeed.
    _rule(
        r"Only root may use this option|target is local node|without --online|"
        r"Configuration file '[^']*' does not exist|Permission check failed",
        Reason.API_ERROR,
        False,
    ),
)

# Progress lines (qemu-server QemuMigrate.pm log wording) and the phase they open.
_PHASE_MARKERS: tuple[tuple[re.Pattern[str], FailurePhase], ...] = (
    (
        re.compile(r"found local(?: disk|, replicated disk)|copying local disk images"),
        FailurePhase.PHASE1,
    ),
    (re.compile(r"starting VM \d+ on remote node"), FailurePhase.PHASE2),
    (re.compile(r"migration status: completed|migration completed"), FailurePhase.PHASE3),
)
_TIMESTAMP = r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d )?"


def is_success(exitstatus: str) -> bool:
    """`OK` and `WARNINGS: n` both mean the VM moved (pve-common RESTEnvironment task end)."""
    return exitstatus == "OK" or exitstatus.startswith("WARNINGS")


def classify(exitstatus: str, log_lines: Sequence[str], target: str | None) -> Failure | None:
    """Classify a stopped migration task; None when it succeeded.

    `target` (the target node) recognises its `[target] ` prefixed `qm start` output as
    phase 2 even when the log was fetched only in part.
    """
    if is_success(exitstatus):
        return None
    lines = [*log_lines, f"TASK ERROR: {exitstatus}"]
    for rule in _LOG_RULES:
        for index, line in enumerate(lines):
            if rule.matches(lines, index):
                phase = rule.phase or _phase_at(lines, index, target, bool(log_lines))
                moved = rule.vm_moved if rule.vm_moved is not None else _moved_after(phase)
                return rule.verdict(line, phase, moved)
    phase = _phase_at(lines, len(lines) - 1, target, bool(log_lines))
    return Failure(Reason.UNKNOWN, False, phase, _first_error(lines), _moved_after(phase))


def classify_api_error(
    status: int, message: str, errors: Mapping[str, Any] | None = None
) -> Failure:
    """Classify a refused migration POST (no task exists). `status` 0: no HTTP answer."""
    texts = [message, *(f"{key}: {value}" for key, value in (errors or {}).items())]
    for rule in _API_RULES:
        for text in texts:
            if rule.pattern.search(text):
                return rule.verdict(text, FailurePhase.API, False)
    decisive = "; ".join(text for text in texts if text) or f"HTTP {status}"
    transient = status == 0 or status >= 500
    return Failure(Reason.API_ERROR, transient, FailurePhase.API, decisive, False)


def _phase_at(lines: Sequence[str], index: int, target: str | None, have_log: bool) -> FailurePhase:
    if not have_log:
        return FailurePhase.UNKNOWN
    target_prefix = re.compile(
        _TIMESTAMP + r"\[" + (re.escape(target) if target else r"[^\]]+") + r"\] "
    )
    phase = FailurePhase.PREPARE
    for line in lines[: index + 1]:
        for pattern, opens in _PHASE_MARKERS:
            if pattern.search(line) and _order(opens) > _order(phase):
                phase = opens
        if target_prefix.search(line) and _order(FailurePhase.PHASE2) > _order(phase):
            phase = FailurePhase.PHASE2
    return phase


_ORDER = (
    FailurePhase.PREPARE,
    FailurePhase.PHASE1,
    FailurePhase.PHASE2,
    FailurePhase.PHASE3,
    FailurePhase.END,
)


def _order(phase: FailurePhase) -> int:
    return _ORDER.index(phase)


def _moved_after(phase: FailurePhase) -> bool | None:
    if phase in (FailurePhase.API, FailurePhase.PREPARE, FailurePhase.PHASE1, FailurePhase.PHASE2):
        return False
    return True if phase is FailurePhase.END else None


def _first_error(lines: Sequence[str]) -> str:
    return next((line for line in lines if "ERROR" in line), lines[-1])
