"""`kubectl proxmigrate plan --maintenance NODE...`: a dry-run NodeMaintenance created, its
plan printed per step, the object deleted; one-line errors for bad input; `status` lists
NodeMaintenances (session faked)."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest

from proxmigrate.api.constants import NODEMAINTENANCES
from proxmigrate.kubectl.cli import build_parser
from proxmigrate.kubectl.errors import EXIT_NOT_DRAINED, EXIT_OK, EXIT_USAGE, PluginError
from proxmigrate.kubectl.plan import cmd_plan, render_maintenance_plan
from proxmigrate.kubectl.status import cmd_status

GIB = 1024**3
STEPS = [
    {
        "step": 1,
        "nodes": ["pve1"],
        "moves": 3,
        "returns": 3,
        "bytes": 24 * GIB,
        "parked": 0,
        "targets": "pve2 2, pve3 1",
        "blocked": "",
    },
    {
        "step": 2,
        "nodes": ["pve2"],
        "moves": 2,
        "returns": 2,
        "bytes": 16 * GIB,
        "parked": 1,
        "targets": "pve1 1, pve3 1",
        "blocked": "",
        "returnSkipped": 1,
    },
]


class FakeSession:
    """A cluster `lab` with nodes pve1-pve3; the operator answers the dry run with `steps`."""

    namespace = "ns"

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = steps
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def list_objects(self, plural: str, **_: Any) -> list[dict[str, Any]]:
        nodes = [{"name": f"pve{n}"} for n in (1, 2, 3)]
        return [{"metadata": {"name": "lab"}, "status": {"nodes": nodes}}]

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        assert plural == NODEMAINTENANCES
        self.created.append(body)
        return {"metadata": {"name": "plan-maintenance-x1"}}

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return {"status": {"phase": "Pending", "plan": {"steps": self.steps}}}

    def delete(self, plural: str, name: str) -> None:
        self.deleted.append(name)


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["plan", *argv])


def test_prints_each_step_and_deletes_the_dry_run() -> None:
    session, out = FakeSession(STEPS), io.StringIO()
    code = cmd_plan(session, args("--maintenance", "pve1", "pve2", "--nodes-at-once", "1"), out)  # type: ignore[arg-type]
    assert code == EXIT_OK
    (body,) = session.created
    assert body["spec"] == {
        "clusterRef": {"name": "lab"},
        "nodes": ["pve1", "pve2"],
        "nodesAtOnce": 1,
        "returnGuests": True,
        "dryRun": True,
    }
    assert session.deleted == ["plan-maintenance-x1"]
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["STEP", "NODES", "MOVES", "RETURNS", "MEMORY", "PARKED", "TARGETS"]
    assert lines[1].split()[:6] == ["1", "pve1", "3", "3", "24.0", "GiB"]
    assert "2 steps, 10 migrations, 40.0 GiB to transfer" in out.getvalue()
    assert "step 2: 1 guests would not return" in out.getvalue()


def test_a_blocked_step_is_shown_and_exits_not_drained() -> None:
    blocked = [{**STEPS[0], "blocked": "step 1 (pve1) lacks 6.0 GiB of memory: ..."}]
    out = io.StringIO()
    code = cmd_plan(FakeSession(blocked), args("pve1", "--maintenance", "--no-return"), out)  # type: ignore[arg-type]
    assert code == EXIT_NOT_DRAINED
    assert "blocked: step 1 (pve1) lacks 6.0 GiB" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--maintenance",), "--maintenance needs the nodes"),
        (("--maintenance", "pve1", "pve1"), "node pve1 is listed more than once"),
        (("--maintenance", "pve1", "--nodes-at-once", "0"), "--nodes-at-once must be at least 1"),
        (("--maintenance", "pve1", "pve9"), "node pve9 is not in ProxmoxCluster lab"),
        ((), "name the node to plan"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(argv: tuple[str, ...], message: str) -> None:
    session = FakeSession(STEPS)
    with pytest.raises(PluginError, match=message) as error:
        cmd_plan(session, args(*argv), io.StringIO())  # type: ignore[arg-type]
    assert "\n" not in str(error.value)
    assert error.value.code in (EXIT_USAGE, 1)
    assert session.created == []


def test_an_empty_plan_renders() -> None:
    assert render_maintenance_plan([]).endswith("0 steps, 0 migrations, 0.0 MiB to transfer")


class ListingSession:
    namespace = "ns"

    def __init__(self, **objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def list_objects(self, plural: str, **_: Any) -> list[dict[str, Any]]:
        return self.objects.get(plural, [])


def test_status_lists_maintenances_first() -> None:
    running = {
        "metadata": {"name": "kernel", "creationTimestamp": "2026-01-01T12:00:00Z"},
        "status": {
            "phase": "Running",
            "currentNodes": "pve2",
            "stepPhase": "InMaintenance",
            "done": 1,
            "total": 4,
        },
    }
    out = io.StringIO()
    session = ListingSession(nodemaintenances=[running])
    assert cmd_status(session, args_of("status"), out) == EXIT_OK  # type: ignore[arg-type]
    header, row = out.getvalue().splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "NODE", "STEP", "DONE", "TOTAL", "AGE"]
    assert row.split()[:6] == ["kernel", "Running", "pve2", "InMaintenance", "1", "4"]
    empty = io.StringIO()
    cmd_status(ListingSession(), args_of("status"), empty)  # type: ignore[arg-type]
    assert empty.getvalue().startswith("no NodeMaintenances, NodeDrains or VMPlacements")


def args_of(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))
