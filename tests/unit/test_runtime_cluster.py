"""ClusterRuntime with its edges faked: it never POSTs twice and does what the engine says."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.api.enums import AuthMethod
from proxmigrate.api.timestamps import to_rfc3339
from proxmigrate.inventory import Inventory, NodeInfo, VMInfo
from proxmigrate.pve.errors import PveUnreachable
from proxmigrate.pve.resources import MigrationSettings
from proxmigrate.pve.tracker import first_migration_since
from proxmigrate.runtime.cluster import ClusterRuntime, MigrationRequest
from proxmigrate.runtime.look_schedule import HANDOFF_LIST_SECONDS

GIB = 1024**3
UPID = "UPID:pve1:00001000:00002000:6B000000:qmigrate:100:root@pam!t:"
DROP_LOG = [
    "2026-01-01 00:00:00 starting migration of VM 100 to node 'pve2' (10.0.0.2)",
    "kex_exchange_identification: read: Connection reset by peer",
    "Connection reset by 10.0.0.2 port 22",
    "2026-01-01 00:00:01 ERROR: migration aborted (duration 00:00:01): Can't connect to "
    "destination address using public key",
]


class FakePve:
    def __init__(self, vm_node: str = "pve1", migration_type: str = "secure") -> None:
        self.vm_node = vm_node
        self.migration_type = migration_type
        self.posts: list[tuple[str, int, str]] = []
        self.options: list[dict[str, Any]] = []  # each POST's keyword arguments
        self.can_choose_migration_type = False  # a token, or a ticket of any user but root@pam
        self.task_rows: list[dict[str, Any]] = []
        self.logs: dict[str, list[str]] = {}
        self.log_reads = 0
        self.task_list_reads = 0

    async def inventory(self) -> Inventory:
        nodes = tuple(NodeInfo(n, True, 64 * GIB, 8 * GIB, 16) for n in ("pve1", "pve2"))
        vm = VMInfo(100, "web", self.vm_node, True, 4 * GIB, 2 * GIB)
        return Inventory(nodes, (vm,), taken_at=0.0)

    async def cluster_options(self) -> MigrationSettings:
        return MigrationSettings(type=self.migration_type)

    async def migrate(self, node: str, vmid: int, target: str, **options: Any) -> str:
        self.posts.append((node, vmid, target))
        self.options.append(options)
        upid = f"UPID:pve1:0000100{len(self.posts)}:00002000:6B000000:qmigrate:100:root@pam!t:"
        # an active task's row (pve-manager `PVE/API2/Tasks.pm` `node_tasks`)
        self.task_rows.append({"upid": upid, "starttime": 0x6B000000, "status": "RUNNING"})
        return upid

    async def tasks(self, node: str, **_: Any) -> list[dict[str, Any]]:
        self.task_list_reads += 1
        return [row for row in self.task_rows if row["upid"].split(":")[1] == node]

    async def find_migration_task(
        self, vmid: int, source: str, since: int, exclude: Any = ()
    ) -> str | None:
        return first_migration_since(await self.tasks(source), vmid, since, exclude)

    async def task_log(self, node: str, upid: str, start: int = 0, **_: Any) -> list[str]:
        self.log_reads += 1
        return self.logs.get(upid, [])[start:]

    def finish(self, upid: str, status: str, log: list[str] | None = None) -> None:
        for row in self.task_rows:
            if row["upid"] == upid:
                row["status"], row["endtime"] = status, 0x6B000010
        # the worker's last line, where the task list takes its status from (pve-common
        # RESTEnvironment.pm fork_worker, UPID.pm read_status); a log only grows: without
        # `log` (the whole log) the lines written so far stay
        ok = status == "OK" or status.startswith("WARNINGS")
        lines = self.logs.get(upid, []) if log is None else log
        self.logs[upid] = [*lines, f"TASK {status}" if ok else f"TASK ERROR: {status}"]

    def close(self) -> None:
        pass


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> Any:
        self.patches.append(status)
        return {"status": status}


def runtime(pve: FakePve, clock: list[float]) -> tuple[ClusterRuntime, FakeKube]:
    kube = FakeKube()
    policy = MigrationPolicySpec.from_spec({"retry": {"backoffSeconds": 1, "maxBackoffSeconds": 2}})
    rt = ClusterRuntime(
        namespace="ns",
        name="lab",
        client=pve,
        policy=policy,
        auth=AuthMethod.TOKEN,  # type: ignore[arg-type]
        kube=kube,
        clock=lambda: clock[0],
        task_poll_seconds=0.0,  # type: ignore[arg-type]
    )
    return rt, kube


REQUEST = MigrationRequest("ns", "move", "uid", 100, "pve2")
# past a new task's first look (tracking: its log is read 2 x 5.25 s after the request)
FIRST_LOOK = 11.0


async def settle(rt: ClusterRuntime) -> None:
    await rt.run_once()
    await rt.settle()


async def started(
    pve: FakePve, poll: float = 0.0
) -> tuple[ClusterRuntime, FakeKube, list[float], str]:
    """A runtime that has accepted REQUEST and POSTed it at 1000.0, polling tasks every
    `poll` seconds: the runtime, its fake Kubernetes, the clock and the task's UPID."""
    clock = [1000.0]
    rt, kube = runtime(pve, clock)
    rt.task_poll_seconds = poll
    await rt.accept(REQUEST, {})
    await settle(rt)
    return rt, kube, clock, str(pve.task_rows[0]["upid"])


def transfer_ends_told(rt: ClusterRuntime) -> list[str]:
    """The migrations whose transfer end the runtime tells the engine of, as it tells them
    (`notify_transfer_ended`, which still runs)."""
    told: list[str] = []
    real = rt.engine.notify_transfer_ended

    def spy(key: str) -> None:
        told.append(key)
        real(key)

    rt.engine.notify_transfer_ended = spy  # type: ignore[method-assign]
    return told


def test_resume_without_upid_adopts_the_task_instead_of_posting_again() -> None:
    async def scenario() -> None:
        clock = [0x6B000000 + 5.0]
        pve = FakePve()
        pve.task_rows.append({"upid": UPID, "starttime": 0x6B000000, "status": "RUNNING"})
        rt, kube = runtime(pve, clock)
        requested = datetime.datetime.fromtimestamp(0x6B000000 - 2, datetime.UTC)
        intent = {
            "phase": "Running",
            "sourceNode": "pve1",
            "attemptCount": 1,
            "attempts": [{"startTime": to_rfc3339(requested), "outcome": "Running"}],
        }
        await rt.accept(REQUEST, intent)
        assert kube.patches[-1]["upid"] == UPID
        pve.finish(UPID, "OK")
        await settle(rt)
        assert pve.posts == []
        assert kube.patches[-1]["phase"] == "Succeeded"

    asyncio.run(scenario())


def test_ssh_drop_is_retried_then_succeeds() -> None:
    async def scenario() -> None:
        clock = [1000.0]
        pve = FakePve()
        rt, kube = runtime(pve, clock)
        await rt.accept(REQUEST, {})
        assert kube.patches[-1]["phase"] == "Queued"
        await settle(rt)
        assert len(pve.posts) == 1
        assert kube.patches[-2]["phase"] == "Running"  # intent persisted before the POST
        first = pve.task_rows[0]["upid"]
        pve.finish(first, "migration aborted", DROP_LOG)
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert kube.patches[-1]["phase"] == "Queued"
        assert kube.patches[-1]["attempts"][-1]["reason"] == "ssh_dropped"
        assert rt.engine.concurrency_limit("pve2") < 8  # AIMD reacted to the drop
        clock[0] += 10
        await settle(rt)
        assert len(pve.posts) == 2
        pve.finish(pve.task_rows[1]["upid"], "OK")
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert kube.patches[-1]["phase"] == "Succeeded"

    asyncio.run(scenario())


def test_insecure_datacenter_setting_blocks_every_start() -> None:
    async def scenario() -> None:
        pve = FakePve(migration_type="insecure")
        rt, _ = runtime(pve, [1000.0])
        await rt.accept(REQUEST, {})
        await settle(rt)
        assert pve.posts == []
        assert rt.transport_refusal() is not None
        assert rt.transport_refusal()[0] == "ClusterMigrationInsecure"  # type: ignore[index]

    asyncio.run(scenario())


def test_vm_already_on_target_succeeds_without_a_migration() -> None:
    async def scenario() -> None:
        pve = FakePve(vm_node="pve2")
        rt, kube = runtime(pve, [1000.0])
        await rt.accept(REQUEST, {})
        assert kube.patches[-1]["phase"] == "Succeeded"
        assert "already on pve2" in kube.patches[-1]["message"]
        assert pve.posts == []

    asyncio.run(scenario())


def test_progress_lines_announce_the_end_phase_to_the_engine() -> None:
    async def scenario() -> None:
        clock = [1000.0]
        pve = FakePve()
        rt, _ = runtime(pve, clock)
        await rt.accept(REQUEST, {})
        await settle(rt)
        upid = pve.task_rows[0]["upid"]
        pve.logs[upid] = [
            "2026-01-01 00:00:05 migration active, transferred 1.5 GiB of 4.0 GiB VM-state, "
            "100.0 MiB/s"
        ]
        clock[0] += 20  # past the first probe: 2 x (5 s start spread + 0.25 s handshake)
        await settle(rt)
        assert pve.log_reads == 1
        # the earliest end: 5.1 s until the guest's 2 GiB in use are sent (not 25.6 s until
        # its 4 GiB are: pages never written are not sent as bytes)
        assert rt.engine.pending_handshakes("pve2", clock[0]) == 0
        clock[0] += 3.5  # the end phase is now less than end_spread_seconds away
        await settle(rt)
        assert rt.engine.pending_handshakes("pve2", clock[0]) == 1
        assert pve.log_reads == 1  # predicted, not polled

    asyncio.run(scenario())


def test_lost_answer_to_the_post_is_found_as_a_task_not_sent_again() -> None:
    async def scenario() -> None:
        clock = [0x6B000000 + 1.0]
        pve = FakePve()
        real_migrate = pve.migrate

        async def answer_lost(node: str, vmid: int, target: str, **kw: Any) -> str:
            await real_migrate(node, vmid, target, **kw)  # PVE got it and started the task
            raise PveUnreachable("read timed out", request_may_have_arrived=True)

        pve.migrate = answer_lost  # type: ignore[method-assign]
        rt, kube = runtime(pve, clock)
        await rt.accept(REQUEST, {})
        await settle(rt)
        assert "upid" not in kube.patches[-1] or not kube.patches[-1]["upid"]
        clock[0] += 1
        await settle(rt)  # the next poll identifies the task
        upid = pve.task_rows[0]["upid"]
        assert rt.attempts[REQUEST.key].upid == upid
        pve.finish(upid, "OK")
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert len(pve.posts) == 1
        assert kube.patches[-1]["phase"] == "Succeeded"

    asyncio.run(scenario())


def test_a_withdrawn_migration_never_starts_and_only_a_queued_one_is_withdrawn() -> None:
    async def scenario() -> None:
        clock = [1000.0]
        pve = FakePve()
        rt, kube = runtime(pve, clock)
        await rt.accept(REQUEST, {})
        writes = len(kube.patches)
        assert rt.withdraw(REQUEST.key)
        assert rt.withdraw(REQUEST.key)  # still withdrawn until its VMMigration is deleted
        await rt.accept(REQUEST, {"phase": "Queued"})  # e.g. kopf re-delivering it
        await settle(rt)
        assert pve.posts == []
        assert len(kube.patches) == writes  # the owner deletes the VMMigration, no status
        assert await rt.cancel(REQUEST) == "cancelled before it started"
        assert not rt.withdraw(REQUEST.key)

        started = MigrationRequest("ns", "started", "uid2", 100, "pve2")
        await rt.accept(started, {})
        await settle(rt)
        assert len(pve.posts) == 1
        assert not rt.withdraw(started.key)  # running: it goes where it goes

    asyncio.run(scenario())


def test_a_task_listed_as_running_stays_running_until_it_ends() -> None:
    """PVE lists an active task with `status: "RUNNING"` (pve-manager `PVE/API2/Tasks.pm`,
    `node_tasks`, the `source eq 'active'` branch): no exit status, so no failure."""

    async def scenario() -> None:
        clock = [1000.0]
        pve = FakePve()
        rt, kube = runtime(pve, clock)
        await rt.accept(REQUEST, {})
        await settle(rt)
        upid = pve.task_rows[0]["upid"]
        for _ in range(3):
            clock[0] += 1
            await settle(rt)
        assert [p["phase"] for p in kube.patches if "phase" in p] == ["Queued", "Running"]
        assert rt.attempts[REQUEST.key].upid == upid
        assert pve.log_reads == 0  # not looked at before its first look
        pve.finish(upid, "OK")
        clock[0] += FIRST_LOOK
        await settle(rt)
        assert kube.patches[-1]["phase"] == "Succeeded"
        assert len(pve.posts) == 1

    asyncio.run(scenario())


def test_only_a_root_ticket_sends_migration_type() -> None:
    """qemu-server `API2/Qemu.pm` migrate_vm refuses `migration_type` from anyone but
    root@pam: a password login as another user is treated like a token."""

    async def scenario() -> None:
        for root, sent in ((False, None), (True, "secure")):
            pve = FakePve()
            pve.can_choose_migration_type = root
            rt, kube = runtime(pve, [1000.0])
            rt.auth = AuthMethod.TICKET
            await rt.accept(REQUEST, {})
            await settle(rt)
            assert [options["migration_type"] for options in pve.options] == [sent]
            assert kube.patches[-1]["upid"]

    asyncio.run(scenario())


def test_a_ticket_of_another_user_gets_the_datacenter_transport_rule() -> None:
    async def scenario() -> None:
        pve = FakePve(migration_type="insecure")
        rt, _ = runtime(pve, [1000.0])
        rt.auth = AuthMethod.TICKET  # e.g. operator@pve: PVE applies datacenter.cfg
        await rt.accept(REQUEST, {})
        await settle(rt)
        assert pve.posts == []
        assert rt.transport_refusal() == (
            "ClusterMigrationInsecure",
            "the datacenter migration setting is type=insecure and only a root@pam ticket may "
            "choose another transport per migration; set migration: type=secure in Datacenter "
            "> Options, or allowInsecure: true to accept clear-text migrations",
        )

    asyncio.run(scenario())


def test_options_hidden_for_lack_of_sys_audit_refuse_naming_the_privilege() -> None:
    async def scenario() -> None:
        pve = FakePve(migration_type="unknown")  # what parse_migration_settings reads then
        rt, _ = runtime(pve, [1000.0])
        await rt.accept(REQUEST, {})
        await settle(rt)
        assert pve.posts == []
        refusal = rt.transport_refusal()
        assert refusal is not None and refusal[0] == "SysAuditMissing"
        assert "Sys.Audit on /" in refusal[1]

    asyncio.run(scenario())


def test_a_request_the_client_refuses_before_sending_ends_at_once() -> None:
    """Not a lost answer: no task can exist, so no 300 s wait for one."""

    async def scenario() -> None:
        clock = [1000.0]
        pve = FakePve()

        async def refuse(node: str, vmid: int, target: str, **options: Any) -> str:
            raise ValueError("migration_type needs a root@pam ticket")

        pve.migrate = refuse  # type: ignore[method-assign]
        rt, kube = runtime(pve, clock)
        await rt.accept(REQUEST, {})
        await settle(rt)
        last = kube.patches[-1]
        assert last["phase"] == "Failed", last
        assert last["reason"] == "api_error"
        assert "root@pam" in last["message"]
        assert not rt.attempts[REQUEST.key].running

    asyncio.run(scenario())


HAMIGRATE = "UPID:pve1:00002000:00002000:6B000000:hamigrate:100:root@pam!t:"
CHILD = "UPID:pve1:00002001:00002000:6B000005:qmigrate:100:root@pam:"


class HaPve(FakePve):
    """An HA-managed guest: PVE answers the migrate POST with a `hamigrate` task that ends OK
    at once; what happens next shows only as `hastate`, placement and lock."""

    def __init__(self, hastate: str = "started") -> None:
        super().__init__()
        self.hastate = hastate
        self.lock: str | None = None
        self.offline: set[str] = set()
        self.inventory_reads = 0

    async def inventory(self) -> Inventory:
        self.inventory_reads += 1
        nodes = tuple(
            NodeInfo(n, n not in self.offline, 64 * GIB, 8 * GIB, 16) for n in ("pve1", "pve2")
        )
        vm = VMInfo(
            100, "web", self.vm_node, True, 4 * GIB, 2 * GIB, ha_state=self.hastate, lock=self.lock
        )
        return Inventory(nodes, (vm,), taken_at=0.0)

    async def migrate(self, node: str, vmid: int, target: str, **_: Any) -> str:
        self.posts.append((node, vmid, target))
        row = {"upid": HAMIGRATE, "starttime": 0x6B000000, "status": "OK", "endtime": 0x6B000001}
        self.task_rows.append(row)
        return HAMIGRATE


def _status(kube: FakeKube) -> dict[str, Any]:
    """The VMMigration's status: every merge patch applied in order."""
    from proxmigrate.status.migration import merged

    status: dict[str, Any] = {}
    for patch in kube.patches:
        status = merged(status, patch)
    return status


def _ha_scenario(pve: HaPve) -> tuple[ClusterRuntime, FakeKube, list[float]]:
    clock = [0x6B000000 + 1.0]
    rt, kube = runtime(pve, clock)
    return rt, kube, clock


def test_ha_guest_is_posted_to_the_qemu_endpoint_and_its_qmigrate_followed() -> None:
    async def scenario() -> None:
        pve = HaPve()
        rt, kube, clock = _ha_scenario(pve)
        await rt.accept(REQUEST, {})
        await settle(rt)
        assert pve.posts == [("pve1", 100, "pve2")]  # no HA endpoint (needs Sys.Console)
        assert kube.patches[-1]["upid"] == HAMIGRATE
        clock[0] += 12
        pve.hastate = "migrate"
        pve.task_rows.append({"upid": CHILD, "starttime": 0x6B000005})
        await settle(rt)
        assert rt.attempts[REQUEST.key].upid == CHILD
        pve.finish(CHILD, "OK")
        clock[0] += 20
        await settle(rt)
        assert _status(kube)["phase"] == "Succeeded"

    asyncio.run(scenario())


def test_ha_request_for_an_offline_target_fails_within_a_few_crm_rounds() -> None:
    async def scenario() -> None:
        pve = HaPve()
        pve.offline.add("pve2")
        rt, kube, clock = _ha_scenario(pve)
        await rt.accept(REQUEST, {})
        await settle(rt)
        reads = pve.inventory_reads
        for _ in range(14):  # a poll every 2.5 s; the CRM dropped the command at once
            clock[0] += 2.5
            await settle(rt)
            if _status(kube)["phase"] != "Running":
                break
        assert clock[0] - (0x6B000000 + 1.0) <= 35.0  # not UNCONFIRMED_TASK_TIMEOUT (300 s)
        last = _status(kube)
        assert last["phase"] == "Queued", last  # offline may end: retried
        assert last["attempts"][-1]["reason"] == "target_offline"
        assert "target node pve2 is not online" in last["message"]
        assert pve.inventory_reads - reads <= 2  # one read once the decision is due

    asyncio.run(scenario())


def test_ha_request_the_lrm_could_not_start_is_reported_as_locked() -> None:
    async def scenario() -> None:
        pve = HaPve()
        rt, kube, clock = _ha_scenario(pve)
        await rt.accept(REQUEST, {})
        await settle(rt)
        pve.hastate = "migrate"  # the CRM took it ...
        clock[0] += 15
        await settle(rt)
        pve.hastate, pve.lock = "started", "backup"  # ... the LRM's worker died: backup lock
        clock[0] += 31
        await settle(rt)
        attempt = _status(kube)["attempts"][-1]
        assert attempt["reason"] == "vm_locked", attempt

    asyncio.run(scenario())


def test_ha_request_still_migrating_in_the_ha_manager_keeps_waiting() -> None:
    async def scenario() -> None:
        pve = HaPve(hastate="migrate")  # the LRM is at max_workers: no qmigrate yet
        rt, kube, clock = _ha_scenario(pve)
        await rt.accept(REQUEST, {})
        await settle(rt)
        clock[0] += 15
        await settle(rt)
        clock[0] += 60
        await settle(rt)
        assert _status(kube)["phase"] == "Running"
        pve.task_rows.append({"upid": CHILD, "starttime": 0x6B000005 + 70})
        clock[0] += HANDOFF_LIST_SECONDS  # its node's list is read once an HA round
        await settle(rt)
        assert rt.attempts[REQUEST.key].upid == CHILD

    asyncio.run(scenario())


def test_failed_hamigrate_blocked_by_pve9_affinity_fails_without_retry() -> None:
    async def scenario() -> None:
        pve = HaPve()
        rt, kube, clock = _ha_scenario(pve)
        await rt.accept(REQUEST, {})
        await settle(rt)
        # pve-ha-manager CLI/ha_manager.pm $print_resource_motion_output dies with these lines;
        # pve-common run_command then fails the task (qemu-server migrate_vm hacmd)
        pve.finish(
            HAMIGRATE,
            "command 'ha-manager migrate vm:100 pve2' failed: exit code 255",
            [
                "Requesting HA migration for VM 100 to node pve2",
                "cannot migrate resource 'vm:100' to node 'pve2':",
                "",
                "- resource 'vm:101' on target node 'pve2' in negative affinity with resource "
                "'vm:100'",
            ],
        )
        await settle(rt)
        clock[0] += 1
        await settle(rt)
        last = _status(kube)
        assert last["phase"] == "Failed", last
        assert last["reason"] == "ha_refused"
        assert "vm:101" in last["message"]

    asyncio.run(scenario())


def test_lost_answer_of_an_ha_guest_is_found_as_its_hamigrate() -> None:
    async def scenario() -> None:
        pve = HaPve()
        pve.offline.add("pve2")
        real_migrate = pve.migrate

        async def answer_lost(node: str, vmid: int, target: str, **kw: Any) -> str:
            await real_migrate(node, vmid, target, **kw)  # PVE forked the hamigrate
            raise PveUnreachable("read timed out", request_may_have_arrived=True)

        pve.migrate = answer_lost  # type: ignore[method-assign]
        rt, kube, clock = _ha_scenario(pve)
        await rt.accept(REQUEST, {})
        await settle(rt)
        clock[0] += 2
        await settle(rt)
        assert rt.attempts[REQUEST.key].upid == HAMIGRATE  # then judged like any HA request
        for _ in range(14):
            clock[0] += 2.5
            await settle(rt)
        assert _status(kube)["reason"] == "target_offline"  # not a timeout after 300 s

    asyncio.run(scenario())
