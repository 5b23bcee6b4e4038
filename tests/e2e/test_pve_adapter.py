"""The PVE adapter against pvesim over real HTTPS: auth, failover, migration, tracking, faults."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from proxmigrate.inventory import VMInfo
from proxmigrate.pve.classifier import Reason, classify, classify_api_error
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.errors import PveApiError, PveAuthError
from proxmigrate.pve.tracker import TaskEnd, TrackedTask, evaluate, nodes_to_poll, poll_since
from proxmigrate.pve.transport import PasswordAuth, RequestRetry, TokenAuth
from pvesim.testing import PvesimProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sim() -> Iterator[PvesimProcess]:
    with PvesimProcess(
        "--nodes", "3", "--vms-per-node", "4", "--time-scale", "100", "--endpoints", "2"
    ) as process:
        yield process


def endpoints(sim: PvesimProcess) -> list[str]:
    return [url.removeprefix("https://") for url in sim.urls]


def token_client(sim: PvesimProcess) -> PveClient:
    return PveClient(
        endpoints(sim),
        TokenAuth(sim.token_id, sim.token_secret),
        ca_bundle=sim.ca_cert,
        retry=RequestRetry(attempts=2, base_delay=0.05),
    )


def movable_vm(client: PveClient, source: str) -> VMInfo:
    return next(
        vm
        for vm in client.inventory().vms_on(source)
        if vm.running and not vm.ha_managed and not vm.lock and not vm.template
    )


def wait_for_end(client: PveClient, task: TrackedTask, timeout: float = 60.0) -> TaskEnd:
    """Track like the controller does: one task list per node per poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tracked = [task]
        lists = {
            node: client.tasks(node, since=poll_since(tracked)) for node in nodes_to_poll(tracked)
        }
        result = evaluate(tracked, lists)
        if result.finished:
            return result.finished[0]
        time.sleep(0.2)
    raise AssertionError(f"task {task.upid} did not end within {timeout} s")


def test_inventory_and_options(sim: PvesimProcess) -> None:
    client = token_client(sim)
    assert client.version()["version"]
    assert client.cluster_options().secure
    inventory = client.inventory()
    assert [node.name for node in inventory.nodes] == ["pve1", "pve2", "pve3"]
    assert len(inventory.vms) == 12
    assert set(sim.state()["placement"]) == {str(vm.vmid) for vm in inventory.vms}


def test_migration_is_tracked_to_success(sim: PvesimProcess) -> None:
    client = token_client(sim)
    vm = movable_vm(client, "pve1")
    since = int(sim.state()["now"]) - 1
    upid = client.migrate("pve1", vm.vmid, "pve2")
    end = wait_for_end(client, TrackedTask(vm.vmid, upid))
    assert end.succeeded, end.exitstatus
    assert classify(end.exitstatus, client.task_log("pve1", upid), "pve2") is None
    assert sim.state()["placement"][str(vm.vmid)] == "pve2"
    assert client.find_migration_task(vm.vmid, "pve1", since) == upid


def test_locked_vm_is_refused_and_classified(sim: PvesimProcess) -> None:
    client = token_client(sim)
    vm = movable_vm(client, "pve3")
    sim.fault(lock_vm=vm.vmid, lock="backup")
    try:
        with pytest.raises(PveApiError) as raised:
            client.migrate("pve3", vm.vmid, "pve2")
        failure = classify_api_error(raised.value.status, raised.value.message, raised.value.errors)
        assert (failure.reason, failure.transient, failure.lock) == (
            Reason.VM_LOCKED,
            True,
            "backup",
        )
    finally:
        sim.fault(unlock_vm=vm.vmid)


def test_sshd_drop_is_classified_from_the_task_log(sim: PvesimProcess) -> None:
    client = token_client(sim)
    vm = movable_vm(client, "pve3")
    sim.fault(max_startups_node="pve1", max_startups="0")  # sshd drops every new connection
    try:
        upid = client.migrate("pve3", vm.vmid, "pve1")
        end = wait_for_end(client, TrackedTask(vm.vmid, upid))
    finally:
        sim.fault(max_startups_node="pve1", max_startups="10:30:100")
    assert not end.succeeded
    failure = classify(end.exitstatus, client.task_log("pve3", upid), "pve1")
    assert failure is not None
    assert (failure.reason, failure.transient, failure.vm_moved) == (
        Reason.SSH_DROPPED,
        True,
        False,
    )
    assert sim.state()["placement"][str(vm.vmid)] == "pve3"


def wait_until_refused(endpoint: str, timeout: float = 10.0) -> None:
    host, _, port = endpoint.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return
        except OSError:
            pass  # reset while the listener shuts down
        time.sleep(0.05)
    raise AssertionError(f"{endpoint} still accepts connections")


def test_failover_when_first_endpoint_goes_down(sim: PvesimProcess) -> None:
    # The client lists the second listener first: the helper's `/_sim` calls use the first.
    first, second = endpoints(sim)[1], endpoints(sim)[0]
    auth = TokenAuth(sim.token_id, sim.token_secret)
    sim.fault(endpoint_down=1)
    try:
        wait_until_refused(first)
        client = PveClient([first, second], auth, ca_bundle=sim.ca_cert)
        assert client.version()
        assert str(client.transport.active_endpoint) == second
    finally:
        sim.fault(endpoint_up=1)


def test_root_ticket_may_choose_secure_and_renews(sim: PvesimProcess) -> None:
    client = PveClient(
        endpoints(sim), PasswordAuth("root@pam", sim.password), ca_bundle=sim.ca_cert
    )
    vm = movable_vm(client, "pve2")
    sim.fault(expire_tickets="1")
    upid = client.migrate("pve2", vm.vmid, "pve3", migration_type="secure")
    assert wait_for_end(client, TrackedTask(vm.vmid, upid)).succeeded


def test_wrong_token_is_an_auth_error(sim: PvesimProcess) -> None:
    client = PveClient(
        endpoints(sim), TokenAuth(sim.token_id, "not-the-secret"), ca_bundle=sim.ca_cert
    )
    with pytest.raises(PveAuthError, match="API token"):
        client.version()
