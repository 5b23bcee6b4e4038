"""Classifier over real PVE task-log wording (docs/reference/proxmox.md#task-log-wording)."""

from __future__ import annotations

import pytest

from proxmigrate.failures import Failure, FailurePhase, Reason
from proxmigrate.pve.classifier import (
    classify,
    classify_api_error,
    is_success,
)

T = "2025-03-01 10:00:0"  # timestamp prefix; the last digit is added per line
KEX_CLOSED = [
    "kex_exchange_identification: Connection closed by remote host",
    "Connection closed by 10.0.0.2 port 22",
]
KEX_RESET = [
    "kex_exchange_identification: read: Connection reset by peer",
    "Connection reset by 10.0.0.2 port 22",
]
OLD_SSH = [
    "ssh_exchange_identification: Connection closed by remote host",
    "Connection closed by 10.0.0.2 port 22",
]
START = [
    f"{T}0 starting migration of VM 120 to node 'pve2' (10.0.0.2)",
]
PHASE2_START = [
    f"{T}1 starting VM 120 on remote node 'pve2'",
]
TUNNEL_OK = [
    f"{T}2 start remote tunnel",
    f"{T}2 ssh tunnel ver 1",
    f"{T}2 starting online/live migration on unix:/run/qemu-server/120.migrate",
    f"{T}3 migration active, transferred 512.0 MiB of 4.0 GiB VM-state, 120.0 MiB/s",
]
COMPLETED = [
    f"{T}8 average migration speed: 200.0 MiB/s - downtime 60 ms",
    f"{T}8 migration completed, transferred 4.0 GiB VM-state",
    f"{T}8 migration status: completed",
]
PHASE2_ABORT = [
    f"{T}4 aborting phase 2 - cleanup resources",
    f"{T}4 migrate_cancel",
    f"{T}5 ERROR: migration finished with problems (duration 00:00:05)",
    "TASK ERROR: migration problems",
]


def drop_at_bin_true(ssh_lines: list[str]) -> list[str]:
    return [
        *START,
        *ssh_lines,
        f"{T}1 ERROR: migration aborted (duration 00:00:01): "
        "Can't connect to destination address using public key",
        "TASK ERROR: migration aborted",
    ]


def drop_at_qm_start(ssh_lines: list[str]) -> list[str]:
    return [
        *START,
        *PHASE2_START,
        *(f"{T}2 [pve2] {line}" for line in ssh_lines),
        f"{T}2 ERROR: online migrate failure - remote command failed with exit code 255",
        *PHASE2_ABORT,
    ]


def drop_at_tunnel(ssh_lines: list[str]) -> list[str]:
    return [
        *START,
        *PHASE2_START,
        f"{T}2 start remote tunnel",
        *ssh_lines,
        f"{T}3 ERROR: online migrate failure - can't open tunnel - no reply",
        *PHASE2_ABORT,
    ]


# The ssh prefix of pve-cluster `PVE/SSHInfo.pm` ssh_info_to_command (known_hosts options
# since PVE 8.1), each argument shell-quoted as pve-common `PVE/Cmd.pm` to_string does.
SSH = (
    "/usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias=pve2' "
    "-o 'UserKnownHostsFile=/etc/pve/nodes/pve2/ssh_known_hosts' "
    "-o 'GlobalKnownHostsFile=none' root@10.0.0.2"
)
RM_FAILED = f"{T}9 ERROR: command '{SSH} rm -f /run/qemu-server/120.migrate' failed: exit code 255"


def failed_rm(ssh_stderr: list[str]) -> list[str]:
    """pve-guest-common `PVE/Tunnel.pm` finish_tunnel after the transfer: run_command (pve-common
    `PVE/Cmd.pm`, no errfunc) copies ssh's stderr into the log as is, then qemu-server
    `PVE/QemuMigrate.pm` phase3_cleanup logs the error and carries on."""
    return [
        *START,
        *PHASE2_START,
        *TUNNEL_OK,
        *COMPLETED,
        *ssh_stderr,
        RM_FAILED,
        f"{T}9 ERROR: migration finished with problems (duration 00:00:09)",
        "TASK ERROR: migration problems",
    ]


DROP_AT_RM = failed_rm(KEX_CLOSED)
DROP_AT_UNLOCK = [
    *START,
    *PHASE2_START,
    *TUNNEL_OK,
    *COMPLETED,
    f"{T}9 ERROR: failed to clear migrate lock: Connection closed by 10.0.0.2 port 22",
    f"{T}9 ERROR: migration finished with problems (duration 00:00:09)",
    "TASK ERROR: migration problems",
]
PORT_EXHAUSTED = [
    *START,
    *PHASE2_START,
    f"{T}2 [pve2] unable to find free port (60000-60050)",
    f"{T}2 ERROR: online migrate failure - remote command failed with exit code 255",
    *PHASE2_ABORT,
]
LOCKED_IN_TASK = [
    f"{T}0 ERROR: migration aborted (duration 00:00:00): VM is locked (backup)",
    "TASK ERROR: migration aborted",
]
LOCAL_DEVICES = [
    f"{T}0 ERROR: migration aborted (duration 00:00:00): "
    "can't migrate VM which uses local devices: hostpci0",
    "TASK ERROR: migration aborted",
]
LOCAL_DISKS = [
    *START,
    f"{T}1 found local disk 'local-lvm:vm-120-disk-0' (in current VM config)",
    f"{T}1 can't migrate local disk 'local-lvm:vm-120-disk-0': use --with-local-disks",
    f"{T}1 ERROR: Problem found while scanning volumes - can't migrate VM - check log",
    f"{T}1 ERROR: migration aborted (duration 00:00:01): Problem found while scanning volumes",
    "TASK ERROR: migration aborted",
]
STORAGE = [
    f"{T}0 ERROR: migration aborted (duration 00:00:00): "
    "storage 'fast' is not available on node 'pve2'",
    "TASK ERROR: migration aborted",
]
# pve-guest-common `PVE/AbstractMigrate.pm` migrate asks the target for its address in the
# migration network (pve-cluster `PVE/SSHInfo.pm` get_ssh_info) before it logs anything; the
# error ends the task (qemu-server `PVE/API2/Qemu.pm` migrate_vm's worker).
GET_IP_FAILED = (
    f"command '{SSH} pvecm mtunnel -migration_network 10.1.0.0/24 -get_migration_ip' "
    "failed: exit code 255"
)
# pve-cluster `PVE/CLI/pvecm.pm` mtunnel on a target without an address in that network
NO_MIGRATION_IP = [
    "could not get migration ip: no IP address configured on local node for network '10.1.0.0/24'",
    f"TASK ERROR: {GET_IP_FAILED}",
]
DROP_AT_GET_IP = [*KEX_CLOSED, f"TASK ERROR: {GET_IP_FAILED}"]
# ssh exiting 255 with nothing on stderr: no drop wording, no verdict
BARE_255 = [f"TASK ERROR: {GET_IP_FAILED}"]
# the target answered without an address: its pvecm printed `no quorum` (pvecm.pm mtunnel)
NO_IP_FROM_TARGET = ["TASK ERROR: failed to get ip for node 'pve2' in network '10.1.0.0/24'"]
LOCK_FILE = ["TASK ERROR: can't lock file '/var/lock/pve-manager/pve-migrate-120' - got timeout"]


@pytest.mark.parametrize(
    ("exitstatus", "log", "reason", "transient", "phase", "moved", "decisive", "lock"),
    [
        ("migration aborted", drop_at_bin_true(KEX_CLOSED), Reason.SSH_DROPPED, True,
         FailurePhase.PREPARE, False, KEX_CLOSED[0], None),
        ("migration aborted", drop_at_bin_true(KEX_RESET), Reason.SSH_DROPPED, True,
         FailurePhase.PREPARE, False, KEX_RESET[0], None),
        ("migration aborted", drop_at_bin_true(OLD_SSH), Reason.SSH_DROPPED, True,
         FailurePhase.PREPARE, False, OLD_SSH[0], None),
        ("migration problems", drop_at_qm_start(KEX_CLOSED), Reason.SSH_DROPPED, True,
         FailurePhase.PHASE2, False, f"{T}2 [pve2] {KEX_CLOSED[0]}", None),
        ("migration problems", drop_at_qm_start(KEX_RESET), Reason.SSH_DROPPED, True,
         FailurePhase.PHASE2, False, f"{T}2 [pve2] {KEX_RESET[0]}", None),
        ("migration problems", drop_at_tunnel(KEX_RESET), Reason.SSH_DROPPED, True,
         FailurePhase.PHASE2, False, KEX_RESET[0], None),
        ("migration problems", DROP_AT_RM, Reason.SSH_DROPPED, True, FailurePhase.PHASE3, True,
         RM_FAILED, None),
        ("migration problems", failed_rm(["ssh: connect to host 10.0.0.2 port 22: Connection "
         "refused"]), Reason.TARGET_OFFLINE, True, FailurePhase.PHASE3, None,
         "ssh: connect to host 10.0.0.2 port 22: Connection refused", None),
        ("migration problems", failed_rm([]), Reason.UNKNOWN, False, FailurePhase.PHASE3, None,
         RM_FAILED, None),
        ("migration problems", DROP_AT_UNLOCK, Reason.SSH_DROPPED, True, FailurePhase.END, True,
         DROP_AT_UNLOCK[-3], "migrate"),
        (GET_IP_FAILED, NO_MIGRATION_IP, Reason.TARGET_OFFLINE, False, FailurePhase.PREPARE, False,
         NO_MIGRATION_IP[0], None),
        (GET_IP_FAILED, DROP_AT_GET_IP, Reason.SSH_DROPPED, True, FailurePhase.PREPARE, False,
         KEX_CLOSED[0], None),
        (GET_IP_FAILED, BARE_255, Reason.UNKNOWN, False, FailurePhase.PREPARE, False, BARE_255[0],
         None),
        (NO_IP_FROM_TARGET[0][12:], NO_IP_FROM_TARGET, Reason.TARGET_OFFLINE, True,
         FailurePhase.PREPARE, False, NO_IP_FROM_TARGET[0], None),
        ("migration problems", PORT_EXHAUSTED, Reason.PORT_UNAVAILABLE, True, FailurePhase.PHASE2,
         False, PORT_EXHAUSTED[2], None),
        ("migration aborted", LOCKED_IN_TASK, Reason.VM_LOCKED, True, FailurePhase.PREPARE, False,
         LOCKED_IN_TASK[0], "backup"),
        ("migration aborted", LOCAL_DEVICES, Reason.LOCAL_RESOURCES, False, FailurePhase.PREPARE,
         False, LOCAL_DEVICES[0], None),
        ("migration aborted", LOCAL_DISKS, Reason.LOCAL_RESOURCES, False, FailurePhase.PHASE1,
         False, LOCAL_DISKS[2], None),
        ("migration aborted", STORAGE, Reason.STORAGE_UNAVAILABLE, False, FailurePhase.PREPARE,
         False, STORAGE[0], None),
        ("can't lock file '/var/lock/pve-manager/pve-migrate-120' - got timeout", LOCK_FILE,
         Reason.TIMEOUT, True, FailurePhase.PREPARE, False, LOCK_FILE[0], None),
    ],
    ids=[
        "bin-true-closed", "bin-true-reset", "bin-true-pve6", "qm-start-closed",
        "qm-start-reset", "mtunnel", "rm-f", "rm-f-refused", "rm-f-no-stderr", "qm-unlock",
        "no-migration-ip", "get-migration-ip-drop", "bare-255", "target-without-quorum",
        "port-exhaustion", "locked", "local-devices", "local-disks", "storage",
        "migrate-lock-timeout",
    ],
)  # fmt: skip
def test_task_failures(
    exitstatus: str,
    log: list[str],
    reason: Reason,
    transient: bool,
    phase: FailurePhase,
    moved: bool,
    decisive: str,
    lock: str | None,
) -> None:
    failure = classify(exitstatus, log, "pve2")
    assert failure == Failure(reason, transient, phase, decisive, moved, lock)


def test_lock_name_is_reported_and_suspended_is_permanent() -> None:
    backup = classify("migration aborted", LOCKED_IN_TASK, "pve2")
    suspended = classify(
        "migration aborted", [LOCKED_IN_TASK[0].replace("backup", "suspended")], "pve2"
    )
    assert backup is not None and backup.lock == "backup"
    assert suspended is not None and (suspended.lock, suspended.transient) == ("suspended", False)


@pytest.mark.parametrize("exitstatus", ["OK", "WARNINGS: 2"])
def test_success_is_not_a_failure(exitstatus: str) -> None:
    log = [*START, *PHASE2_START, *TUNNEL_OK, *COMPLETED, f"TASK {exitstatus}"]
    assert is_success(exitstatus)
    assert classify(exitstatus, log, "pve2") is None


def test_target_qm_start_failing_for_another_reason_is_not_an_ssh_drop() -> None:
    log = [
        *START,
        *PHASE2_START,
        f"{T}2 [pve2] start failed: QEMU exited with code 1",
        f"{T}2 ERROR: online migrate failure - remote command failed with exit code 255",
        *PHASE2_ABORT,
    ]
    failure = classify("migration problems", log, "pve2")
    assert failure is not None
    assert (failure.reason, failure.transient, failure.phase) == (
        Reason.UNKNOWN,
        False,
        FailurePhase.PHASE2,
    )
    assert failure.vm_moved is False


def test_unknown_failure_after_transfer_leaves_location_open() -> None:
    log = [*START, *PHASE2_START, *TUNNEL_OK, *COMPLETED, f"{T}9 ERROR: something odd"]
    failure = classify("migration problems", log, "pve2")
    assert failure is not None
    assert (failure.reason, failure.phase, failure.vm_moved) == (
        Reason.UNKNOWN,
        FailurePhase.PHASE3,
        None,
    )
    assert failure.decisive_line == f"{T}9 ERROR: something odd"


def test_without_a_log_the_exit_status_decides() -> None:
    failure = classify("VM is locked (migrate)", [], None)
    assert failure is not None
    assert (failure.reason, failure.lock, failure.phase) == (
        Reason.VM_LOCKED,
        "migrate",
        FailurePhase.PREPARE,
    )
    unknown = classify("migration problems", [], None)
    assert unknown is not None
    assert (unknown.reason, unknown.phase, unknown.vm_moved) == (
        Reason.UNKNOWN,
        FailurePhase.UNKNOWN,
        None,
    )


def test_stopped_task_is_cancelled() -> None:
    failure = classify("interrupted by signal", [*START, "TASK ERROR: interrupted by signal"], None)
    assert failure is not None
    assert (failure.reason, failure.transient) == (Reason.CANCELLED, False)


def test_host_key_mismatch_is_not_an_sshd_drop() -> None:
    log = [*START, "Host key verification failed.", *drop_at_bin_true([])[1:]]
    failure = classify("migration aborted", log, "pve2")
    assert failure is not None
    assert (failure.reason, failure.transient) == (Reason.UNKNOWN, False)


@pytest.mark.parametrize(
    ("status", "message", "errors", "reason", "transient"),
    [
        (500, "VM is locked (backup)", None, Reason.VM_LOCKED, True),
        (500, "no such cluster node 'pve9'", None, Reason.TARGET_OFFLINE, False),
        (400, "Parameter verification failed.",
         {"migration_type": "Only root may use this option."}, Reason.API_ERROR, False),
        (500, "can't migrate VM which uses local devices: hostpci0", None,
         Reason.LOCAL_RESOURCES, False),
        (500, "can't lock file '/var/lock/pve-manager/pve-migrate-120' - got timeout", None,
         Reason.TIMEOUT, True),
        (500, "storage 'fast' is not available on node 'pve2'", None,
         Reason.STORAGE_UNAVAILABLE, False),
        (500, "cluster not ready - no quorum?", None, Reason.API_ERROR, True),
        (500, "can't migrate running VM without --online", None, Reason.API_ERROR, False),
        (500, "target is local node.", None, Reason.API_ERROR, False),
        (503, "Service Unavailable", None, Reason.API_ERROR, True),
        (0, "connection refused", None, Reason.API_ERROR, True),
        (403, "Permission check failed (/vms/120, VM.Migrate)", None, Reason.API_ERROR, False),
        (400, "Parameter verification failed.", {"target": "invalid format"},
         Reason.API_ERROR, False),
    ],
)  # fmt: skip
def test_api_errors(
    status: int, message: str, errors: dict[str, str] | None, reason: Reason, transient: bool
) -> None:
    failure = classify_api_error(status, message, errors)
    assert (failure.reason, failure.transient, failure.phase, failure.vm_moved) == (
        reason,
        transient,
        FailurePhase.API,
        False,
    )
    assert failure.decisive_line


def test_api_error_decisive_line_names_the_parameter() -> None:
    failure = classify_api_error(
        400, "Parameter verification failed.", {"migration_type": "Only root may use this option."}
    )
    assert failure.decisive_line == "migration_type: Only root may use this option."
