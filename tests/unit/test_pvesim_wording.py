"""pvesim's migration task logs, per failing step, as PVE writes them; and the operator's
classifier reads them right.

Sources: qemu-server `src/PVE/QemuMigrate.pm` (prepare, phase1, scan_local_volumes,
phase2_cleanup, phase3_cleanup), pve-guest-common `src/PVE/AbstractMigrate.pm` (migrate,
log/$msg2text, cmd_quiet/cmd_logerr), pve-cluster `src/PVE/SSHInfo.pm` (get_ssh_info,
ssh_info_to_command; known_hosts options since 8.0.6 = PVE 8.1), pve-common
`src/PVE/Cmd.pm` (run: `command '...' failed: exit code N`, errmsg), `src/PVE/RESTEnvironment.pm`
(fork_worker: `TASK ERROR: <die text>`), pve-manager `PVE/API2/Nodes.pm` (migrateall,
$create_migrate_worker). docs/reference/proxmox.md#task-log-wording has the table.
"""

from __future__ import annotations

import re
from typing import Any

from proxmigrate.failures import FailurePhase, Reason
from proxmigrate.pve.classifier import classify
from pvesim.model import Cluster, ModelParams, from_config
from tests.unit.test_pvesim_model import _drop_nth_connection, _vms

NETWORK = "10.1.0.0/24"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def _cluster(vms: list[dict[str, Any]], pve: int = 8, **datacenter: Any) -> Cluster:
    config = {
        "nodes": [{"name": f"pve{i}", "memory_gib": 1024} for i in (1, 2, 3)],
        "vms": vms,
        "datacenter": datacenter,
    }
    return from_config(config, seed=1, params=ModelParams(pve_version=pve))


def _ssh(ip: str, node: str = "pve2") -> str:
    return (
        f"/usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias={node}' "
        f"-o 'UserKnownHostsFile=/etc/pve/nodes/{node}/ssh_known_hosts' "
        f"-o 'GlobalKnownHostsFile=none' root@{ip}"
    )


def _migrate(cluster: Cluster, drop: int | None = None, **options: Any) -> tuple[list[str], Any]:
    """Run one migration of VM 100 to pve2, pve2's sshd dropping its `drop`-th connection.
    Returns the log with timestamps cut off (raw lines stay as they are) and the task."""
    if drop is not None:
        _drop_nth_connection(cluster, "pve2", drop)
    upid = cluster.migrate("pve1", 100, "pve2", **options)
    cluster.run_until_idle()
    task = cluster.tasks[upid]
    return [TIMESTAMP.sub("", line) for line in task.lines], task


def _classified(task: Any) -> Any:
    return classify(task.exitstatus, task.lines, "pve2")


def test_success_logs_pve9_conntrack_then_the_dedicated_address_then_phase1() -> None:
    """prepare (conntrack warning, PVE 9), then migrate()'s migration-network line, then
    phase1's `starting migration of VM`."""
    cluster = _cluster(_vms(1), pve=9, migration=f"type=secure,network={NETWORK}")
    text, task = _migrate(cluster, online=True)
    assert text[:3] == [
        "conntrack state migration not supported or disabled, active connections might get dropped",
        "use dedicated network address for sending migration traffic (10.1.0.2)",
        "starting migration of VM 100 to node 'pve2' (10.1.0.2)",
    ]
    assert text[-1] == "TASK OK" and task.exitstatus == "OK"


def test_get_migration_ip_failure_is_the_task_error_itself() -> None:
    """SSHInfo.pm get_ssh_info runs in migrate() before any log line, over the management
    network, through run_command without errfunc: ssh's stderr lands raw."""
    cluster = _cluster(_vms(1), migration=f"type=secure,network={NETWORK}")
    text, task = _migrate(cluster, drop=1, online=True)
    command = f"{_ssh('10.0.0.2')} pvecm mtunnel -migration_network {NETWORK} -get_migration_ip"
    assert task.exitstatus == f"command '{command}' failed: exit code 255"
    assert text[-1] == f"TASK ERROR: {task.exitstatus}"
    assert text[0].startswith(("kex_exchange_identification: ", "Connection "))
    assert task.lines[0] == text[0]  # raw: no timestamp
    assert not any("migration aborted" in line or "starting migration" in line for line in text)
    assert _classified(task).reason is Reason.SSH_DROPPED


def test_bin_true_failure_prints_the_command_then_ssh_lines_then_aborts() -> None:
    text, task = _migrate(_cluster(_vms(1)), drop=1, online=True)
    assert text[0] == f"# {_ssh('10.0.0.2')} /bin/true"
    assert text[1].startswith("kex_exchange_identification: ")
    assert TIMESTAMP.match(task.lines[1])  # cmd_quiet's captured output is timestamped
    assert text[3].startswith("ERROR: migration aborted (duration 00:00:0")
    assert text[3].endswith("): Can't connect to destination address using public key")
    assert text[4:] == ["TASK ERROR: migration aborted"]
    assert not any("starting migration" in line for line in text)  # prepare failed
    failure = _classified(task)
    assert (failure.reason, failure.phase, failure.vm_moved) == (
        Reason.SSH_DROPPED,
        FailurePhase.PREPARE,
        False,
    )


def test_migration_network_logs_the_dedicated_address_and_tests_it_again() -> None:
    cluster = _cluster(_vms(1), migration=f"type=secure,network={NETWORK}")
    text, task = _migrate(cluster, drop=3, online=True)  # mtunnel, /bin/true, /bin/true
    assert text[0] == "use dedicated network address for sending migration traffic (10.1.0.2)"
    assert text[1] == f"# {_ssh('10.1.0.2')} /bin/true"
    assert text[-2].endswith(
        "Can't connect to destination address (10.1.0.2) using public key authentication"
    )
    assert task.exitstatus == "migration aborted"


def test_local_disk_of_a_running_vm_is_a_warning_line_then_phase1_aborts() -> None:
    vms = _vms(1, disks=[{"key": "scsi0", "storage": "local-lvm", "size_gib": 8}])
    cluster = _cluster(vms)
    text, task = _migrate(cluster, online=True)
    volid = cluster.vms[100].disks[0].volid
    assert text[:6] == [
        "starting migration of VM 100 to node 'pve2' (10.0.0.2)",
        f"found local disk '{volid}' (attached)",
        f"can't migrate local disk '{volid}': can't live migrate attached local disks without "
        "with-local-disks option",
        "ERROR: Problem found while scanning volumes - can't migrate VM - check log",
        "aborting phase 1 - cleanup resources",
        text[5],
    ]
    assert text[5].endswith("Problem found while scanning volumes - can't migrate VM - check log")
    assert text[5].startswith("ERROR: migration aborted (duration ")
    assert text[6:] == ["TASK ERROR: migration aborted"]
    assert cluster.vms[100].lock is None and cluster.vms[100].node == "pve1"
    failure = _classified(task)
    assert (failure.reason, failure.phase) == (Reason.LOCAL_RESOURCES, FailurePhase.PHASE1)


def test_stopped_vm_with_a_local_disk_migrates_offline() -> None:
    vms = _vms(1, running=False, disks=[{"key": "scsi0", "storage": "local-lvm", "size_gib": 8}])
    cluster = _cluster(vms)
    text, task = _migrate(cluster)
    volid = cluster.vms[100].disks[0].volid
    assert text[1:3] == [f"found local disk '{volid}' (attached)", "copying local disk images"]
    assert task.exitstatus == "OK" and cluster.vms[100].node == "pve2"


def test_qm_unlock_failure_prints_the_command_and_keeps_the_last_ssh_line_for_the_error() -> None:
    text, task = _migrate(_cluster(_vms(1)), drop=5, online=True)  # /bin/true .. qm unlock
    i = text.index(f"# {_ssh('10.0.0.2')} qm unlock 100")
    assert text[i + 1].startswith("kex_exchange_identification: ")
    assert re.fullmatch(
        r"ERROR: failed to clear migrate lock: Connection (closed|reset) by 10\.0\.0\.2 port 22",
        text[i + 2],
    )
    assert task.exitstatus == "migration problems"
    failure = _classified(task)
    assert (failure.reason, failure.phase, failure.vm_moved, failure.lock) == (
        Reason.SSH_DROPPED,
        FailurePhase.END,
        True,
        "migrate",
    )


def test_rm_f_failure_prints_ssh_raw_then_the_command_error() -> None:
    text, task = _migrate(_cluster(_vms(1)), drop=4, online=True)
    command = f"{_ssh('10.0.0.2')} rm -f /run/qemu-server/100.migrate"
    i = text.index(f"ERROR: command '{command}' failed: exit code 255")
    assert not TIMESTAMP.match(task.lines[i - 1])  # finish_tunnel's run_command: raw stderr
    assert text[i - 1].startswith("Connection ")
    assert _classified(task).reason is Reason.SSH_DROPPED


def test_migrateall_continues_the_check_line_and_migrates_stopped_local_disk_guests() -> None:
    disk = [{"key": "scsi0", "storage": "local-lvm", "size_gib": 8}]
    vms = [
        *_vms(1, disks=disk),  # running with a local disk: skipped
        *_vms(1, first=101, running=False, disks=disk),  # stopped: offline
        *_vms(1, first=102, local_devices=["hostpci0"]),
        *_vms(1, first=103, lock="backup"),
    ]
    cluster = _cluster(vms)
    upid = cluster.migrateall("pve1", "pve2", maxworkers=2)
    cluster.run_until_idle()
    lines = cluster.tasks[upid].lines
    volid = cluster.vms[100].disks[0].volid
    assert lines == [
        "Check VM 100: skip VM 100 - precondition check failed:",
        f"  Has local disks: {volid}",
        "Check VM 101: precondition check passed",
        "Migrating VM 101",
        "Check VM 102: skip VM 102 - precondition check failed:",
        "  Has local resources: hostpci0",
        "Check VM 103: VM is locked (backup)",
        "All jobs finished, used 1 workers in total.",
        "TASK OK",
    ]
    assert cluster.vms[101].node == "pve2"
