"""Deleting a running VMMigration stops its PVE task and says what the stop left behind.

PVE's DELETE of a task returns once the worker is gone: SIGTERM to its process group, SIGKILL
after 5 s (pve-common `src/PVE/RESTEnvironment.pm` check_worker, kill_process_group). A
killed worker writes no end line (`unexpected status`, pve-common `src/PVE/UPID.pm`
read_status) and may leave the target's incoming QEMU and the config's `lock: migrate`
(qemu-server `src/PVE/QemuMigrate.pm` phase2_cleanup, phase3_cleanup); only root@pam may
clear a lock (qemu-server `API2/Qemu.pm` update_vm: `skiplock`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from proxmigrate.inventory import Inventory
from proxmigrate.pve.errors import PveApiError
from tests.unit.test_runtime_cluster import REQUEST, FakePve, runtime, settle

KILLED = "unexpected status"


class StoppablePve(FakePve):
    """FakePve whose DELETE ends the task with `status` and leaves `lock` on the VM."""

    def __init__(self, status: str, lock: str | None, root: bool) -> None:
        super().__init__()
        self.stop_status, self.lock, self.root = status, lock, root
        self.stops: list[tuple[str, str]] = []
        self.unlocks: list[tuple[str, int]] = []

    async def inventory(self) -> Inventory:
        inventory = await super().inventory()
        vms = tuple(dataclasses.replace(vm, lock=self.lock) for vm in inventory.vms)
        return dataclasses.replace(inventory, vms=vms)

    async def stop_task(self, node: str, upid: str) -> None:
        self.stops.append((node, upid))
        self.finish(upid, self.stop_status)

    async def unlock_vm(self, node: str, vmid: int) -> None:
        if not self.root:  # a token: `skiplock` is root@pam's only
            raise PveApiError(
                400,
                "Parameter verification failed.",
                {"skiplock": "Only root may use this option."},
            )
        self.unlocks.append((node, vmid))
        self.lock = None


def _cancel(pve: StoppablePve) -> tuple[str, list[tuple[str, str, str]], dict[str, Any]]:
    events: list[tuple[str, str, str]] = []

    async def scenario() -> tuple[str, dict[str, Any]]:
        clock = [0x6B000000 + 5.0]
        rt, kube = runtime(pve, clock)
        rt.events = lambda ref, kind, reason, message: events.append((kind, reason, message))
        await rt.accept(REQUEST, {})
        await settle(rt)
        assert len(pve.posts) == 1
        message = await rt.cancel(REQUEST)
        return message, kube.patches[-1]

    message, status = asyncio.run(scenario())
    return message, events, status


def test_a_killed_task_and_a_lock_the_token_may_not_clear_are_reported() -> None:
    pve = StoppablePve(KILLED, "migrate", root=False)
    message, events, status = _cancel(pve)
    assert pve.stops == [("pve1", pve.task_rows[0]["upid"])]
    assert "VM 100 keeps lock 'migrate' on pve1" in message
    assert "run 'qm unlock 100' there" in message
    assert "an incoming VM 100 may still run on pve2" in message
    assert status["phase"] == "Cancelled" and status["message"] == message
    assert events[-1] == ("Warning", "Cancelled", message)


def test_a_root_ticket_clears_the_lock_the_stop_left() -> None:
    pve = StoppablePve("migration problems", "migrate", root=True)
    message, events, _ = _cancel(pve)
    assert pve.unlocks == [("pve1", 100)] and pve.lock is None
    assert "stale 'migrate' lock of VM 100 on pve1 cleared" in message
    assert events[-1][0] == "Normal"


def test_a_clean_stop_says_so_only() -> None:
    pve = StoppablePve("migration problems", None, root=False)
    message, events, _ = _cancel(pve)
    assert message == f"cancelled; PVE task {pve.task_rows[0]['upid']} stopped"
    assert events[-1][0] == "Normal" and pve.unlocks == []


class SlowPve(StoppablePve):
    """Its migration POST answers only once `answer` is set."""

    def __init__(self) -> None:
        super().__init__("migration problems", None, root=False)
        self.answer = asyncio.Event()

    async def migrate(self, node: str, vmid: int, target: str, **options: Any) -> str:
        upid = await super().migrate(node, vmid, target, **options)
        await self.answer.wait()
        return upid


def test_a_task_whose_request_was_out_when_cancelled_is_stopped_once_pve_answers() -> None:
    async def scenario() -> None:
        pve = SlowPve()
        rt, kube = runtime(pve, [0x6B000000 + 5.0])
        await rt.accept(REQUEST, {})
        await rt.run_once()
        while not pve.posts:  # the intent is written, the POST is out
            await asyncio.sleep(0)
        message = await rt.cancel(REQUEST)
        assert message == "cancelled; no PVE task known yet"
        pve.answer.set()
        await rt.settle()
        assert pve.stops == [("pve1", pve.task_rows[0]["upid"])]  # not left to move the VM
        assert kube.patches[-1]["phase"] == "Cancelled"

    asyncio.run(scenario())
