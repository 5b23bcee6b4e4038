"""The adapter's reading of PVE's HA state and of HA refusals (pve-ha-manager wording)."""

from __future__ import annotations

from proxmigrate.failures import Reason
from proxmigrate.pve.ha_verdicts import classify_hamigrate, classify_unstarted_ha
from proxmigrate.pve.resources import parse_inventory


def _guest(**fields: object) -> dict[str, object]:
    return {"type": "qemu", "vmid": 100, "node": "pve1", "status": "running"} | fields


def test_ignored_ha_resource_is_not_ha_managed() -> None:
    """pve-manager API2/Cluster.pm resources shows `hastate` from resources.cfg for an
    `ignored` resource; HA/Config.pm vm_is_ha_managed does not count it."""
    resources = [
        _guest(vmid=100, hastate="ignored"),
        _guest(vmid=101, hastate="started"),
        _guest(vmid=102, hastate="migrate"),
        _guest(vmid=103),
    ]
    vms = {vm.vmid: vm for vm in parse_inventory(resources, taken_at=0.0).vms}
    assert [vms[v].ha_managed for v in (100, 101, 102, 103)] == [False, True, True, False]
    assert vms[102].ha_state == "migrate" and vms[103].ha_state is None


def test_hamigrate_blocked_by_negative_affinity_names_the_blocking_resource() -> None:
    # pve-ha-manager CLI/ha_manager.pm $print_resource_motion_output (PVE 9)
    lines = [
        "Requesting HA migration for VM 100 to node pve2",
        "cannot migrate resource 'vm:100' to node 'pve2':",
        "",
        "- resource 'vm:101' on target node 'pve2' in negative affinity with resource 'vm:100'",
    ]
    failure = classify_hamigrate(
        "command 'ha-manager migrate vm:100 pve2' failed: exit code 255", lines, "pve2"
    )
    assert failure is not None
    assert (failure.reason, failure.transient, failure.vm_moved) == (
        Reason.HA_REFUSED,
        False,
        False,
    )
    assert "'vm:101'" in failure.decisive_line


def test_hamigrate_of_a_service_in_error_state_is_not_retried() -> None:
    # pve-ha-manager API2/HA/Resources.pm check_service_state
    lines = ["service 'vm:100' in error state, must be disabled and fixed first"]
    failure = classify_hamigrate("command 'ha-manager migrate vm:100 pve2' failed", lines, None)
    assert failure is not None and failure.reason is Reason.HA_REFUSED and not failure.transient


def test_hamigrate_of_a_guest_no_longer_ha_managed_is_retried() -> None:
    lines = ["resource 'vm:100' is not HA managed"]  # HA/Config.pm service_is_ha_managed
    failure = classify_hamigrate("command 'ha-manager migrate vm:100 pve2' failed", lines, None)
    assert failure is not None and failure.reason is Reason.HA_REFUSED and failure.transient
    assert classify_hamigrate("OK", ["Requesting HA migration for VM 100"], None) is None


def test_unstarted_ha_request_tells_offline_target_lock_and_the_rest_apart() -> None:
    offline = classify_unstarted_ha("pve2", target_online=False, lock=None)
    assert (offline.reason, offline.transient) == (Reason.TARGET_OFFLINE, True)
    locked = classify_unstarted_ha("pve2", target_online=True, lock="backup")
    assert (locked.reason, locked.transient, locked.lock) == (Reason.VM_LOCKED, True, "backup")
    suspended = classify_unstarted_ha("pve2", target_online=True, lock="suspended")
    assert not suspended.transient
    other = classify_unstarted_ha("pve2", target_online=True, lock=None)
    assert (other.reason, other.transient, other.vm_moved) == (Reason.HA_REFUSED, True, False)
