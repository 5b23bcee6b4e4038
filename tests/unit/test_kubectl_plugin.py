"""The plugin: progress line, tables with the CRDs' columns, outputs, kubectl's flags anywhere,
exit statuses, progress following, one-line errors."""

from __future__ import annotations

import datetime
import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxmigrate.api.constants import NODEDRAINS
from proxmigrate.kubectl.cli import build_parser, duration, main
from proxmigrate.kubectl.drain import check_node, drain_manifest
from proxmigrate.kubectl.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PluginError,
    exit_code,
)
from proxmigrate.kubectl.progress import (
    drain_ended,
    follow_drain,
    progress_bar,
    render_progress,
    throughput,
)
from proxmigrate.kubectl.tables import (
    PRINTER_COLUMNS,
    render_objects,
    render_output,
    render_plan,
    render_summary,
    render_table,
)
from tests.support.controlplane import REPO_ROOT

GIB = 1024**3
NOW = datetime.datetime(2026, 1, 1, 12, 0, 40, tzinfo=datetime.UTC)


def draining(**overrides: Any) -> dict[str, Any]:
    status = {
        "phase": "Draining",
        "total": 40,
        "migrated": 10,
        "failed": 2,
        "skipped": 0,
        "remaining": 28,
        "progress": 0.3,
        "memoryBytesMigrated": 40 * GIB,
        "startTime": "2026-01-01T12:00:00Z",
        "eta": "1m30s",
    }
    status.update(overrides)
    return status


@pytest.mark.parametrize(
    ("ratio", "bar"),
    [(0.0, "[----]"), (0.5, "[##--]"), (1.0, "[####]"), (1.7, "[####]"), (-1, "[----]")],
)
def test_progress_bar_is_clamped(ratio: float, bar: str) -> None:
    assert progress_bar(ratio, width=4) == bar


def test_progress_line_shows_done_total_throughput_eta_and_phase() -> None:
    line = render_progress(draining(), NOW)
    assert line.startswith("[#######-----------------]")
    assert "12/40 VMs" in line  # migrated + failed
    assert "10 migrated" in line and "2 failed" in line
    assert "1.0 GiB/s" in line  # 40 GiB in 40 s
    assert "ETA 1m30s" in line and line.endswith("Draining")
    assert "skipped" not in line


def test_progress_line_before_any_move_has_no_rate_or_eta() -> None:
    line = render_progress({"phase": "Pending"}, NOW)
    assert "0/0 VMs" in line and "/s" not in line and "ETA" not in line
    assert throughput({"startTime": "2026-01-01T12:00:00Z"}, NOW) is None


def test_progress_line_while_returning_shows_the_return_not_the_drain() -> None:
    """The drain's own figures (all 6 moved, progress 1.0) would say the return is done."""
    moved = {"from": "pve1", "to": "pve2", "phase": "Migrated"}
    homeward = ["Returned", "Returned", "ReturnSkipped", "Migrating", None, None]
    vms = [
        {"vmid": 100 + i, **moved, **({"returnPhase": p} if p else {})}
        for i, p in enumerate(homeward)
    ]
    status = draining(
        phase="Returning", migrated=6, failed=0, remaining=0, progress=1.0, eta="45s", vms=vms
    )
    status.update(returned=2, returnSkipped=1, returnFailed=0)
    line = render_progress(status, NOW)
    assert line.startswith("[############------------]")  # 3 of 6 ended
    assert "3/6 VMs home" in line and "2 returned" in line and "1 skipped" in line
    assert "0 failed" in line and "/s" not in line  # the drain's throughput is not the return's
    assert "ETA 45s" in line and line.endswith("Returning")
    status = draining(phase="Returned", vms=[{**vms[0]}, {**vms[2]}], eta=None)
    assert render_progress(status, NOW).startswith("[########################]  2/2 VMs home")


def test_table_pads_columns() -> None:
    assert render_table(["A", "LONG"], [["xyz", 1]]) == "A    LONG\nxyz  1"


def test_plan_table_lists_moves_and_unplaceable_with_missing_memory() -> None:
    plan = {
        "entries": [
            {"order": 1, "vmid": 101, "name": "db", "memoryBytes": 16 * GIB, "from": "a", "to": "b"}
        ],
        "unplaceable": [{"vmid": 102, "name": "big", "reason": "needs 64.0 GiB"}],
        "missingMemoryBytes": 8 * GIB,
    }
    text = render_plan(plan)
    lines = text.splitlines()
    assert lines[0].split() == ["ORDER", "VMID", "NAME", "MEMORY", "FROM", "TO"]
    assert lines[1].split() == ["1", "101", "db", "16.0", "GiB", "a", "b"]
    assert "1 VMs to move, 16.0 GiB of memory" in text
    assert "102 (big): needs 64.0 GiB" in text
    assert "memory missing on the targets: 8.0 GiB" in text


def test_drains_table_and_summary_with_problem() -> None:
    failed = draining(
        phase="Failed",
        remaining=0,
        progress=1.0,
        completionTime="2026-01-01T12:02:00Z",
        conditions=[{"type": "Degraded", "status": "True", "message": "2 VMs failed: 101: x"}],
    )
    created = {"name": "d", "creationTimestamp": "2026-01-01T12:00:00Z"}
    drain = {"metadata": created, "spec": {"nodeName": "pve1"}, "status": failed}
    table = render_objects(NODEDRAINS, [drain], NOW).splitlines()
    assert table[0].split() == ["NAME", "NODE", "PHASE", "MIGRATED", "REMAINING", "FAILED", "AGE"]
    assert table[1].split() == ["d", "pve1", "Failed", "10", "0", "2", "40s"]
    wide = render_objects(NODEDRAINS, [drain], NOW, wide=True).splitlines()
    assert wide[0].split()[-3:] == ["PROGRESS", "ETA", "RETURNED"]
    assert wide[1].split()[-3:] == ["1.0", "1m30s", "<none>"]
    summary = render_summary("d", failed)
    assert summary.startswith("nodedrain/d Failed: 10 migrated, 2 failed, 0 skipped of 40 in 2m")
    assert summary.endswith("2 VMs failed: 101: x")
    returned = {**failed, "phase": "Returned", "returned": 9, "returnSkipped": 1, "conditions": []}
    assert render_summary("d", returned).endswith(
        "in 2m; 9 returned home, 1 return skipped, 0 return failed"
    )


@pytest.mark.parametrize(
    ("phase", "code"), [("Drained", 0), ("Failed", 3), ("Blocked", 3), ("Cancelled", 3)]
)
def test_exit_code(phase: str, code: int) -> None:
    assert exit_code(phase) == code


def test_unknown_node_is_refused_with_the_known_ones() -> None:
    cluster = {"metadata": {"name": "lab"}, "status": {"nodes": [{"name": "b"}, {"name": "a"}]}}
    check_node(cluster, "a")
    with pytest.raises(PluginError, match=r"node c is not in ProxmoxCluster lab \(nodes: a, b\)"):
        check_node(cluster, "c")
    check_node({"metadata": {"name": "lab"}}, "c")  # not synced yet: the operator decides


def test_drain_manifest_sets_only_what_was_asked() -> None:
    body = drain_manifest("pve1", "lab", name="drain-pve1", max_parallel=3)
    assert body["metadata"] == {"name": "drain-pve1"}
    assert body["spec"] == {"clusterRef": {"name": "lab"}, "nodeName": "pve1", "maxParallel": 3}
    dry = drain_manifest("pve1", "lab", generate_name="plan-pve1-", dry_run=True)
    assert dry["metadata"] == {"generateName": "plan-pve1-"} and dry["spec"]["dryRun"] is True


def test_follow_prints_changes_until_a_final_phase() -> None:
    statuses = iter(
        [
            {"status": draining(phase="Pending", startTime=None, eta=None)},
            {"status": draining(phase="Pending", startTime=None, eta="5s")},  # same counts
            {"status": draining(phase="Drained", remaining=0, progress=1.0)},
        ]
    )
    out = io.StringIO()
    final = follow_drain(lambda: next(statuses), out, live=False, poll_seconds=0)
    assert final["phase"] == "Drained"
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith("Pending") and lines[1].endswith("Drained")


def test_following_a_drain_whose_return_is_asked_waits_until_its_guests_are_home() -> None:
    """`maintenanceDone` (with `returnGuests`) asks for the return: the Drained written for
    the spec before it (observedGeneration 1) is not the end, nor would a Drained be; the
    return ends at Returned, exit status 0. The old follow stopped at that Drained."""
    meta, spec = {"generation": 2}, {"returnGuests": True, "maintenanceDone": True}
    home = [{"vmid": 100, "phase": "Migrated", "returnPhase": "Returned"}]
    bodies = iter(
        {"metadata": meta, "spec": spec, "status": status}
        for status in [
            draining(phase="Drained", remaining=0, progress=1.0, observedGeneration=1),
            draining(
                phase="Returning", observedGeneration=2, vms=[{**home[0], "returnPhase": "Queued"}]
            ),
            draining(phase="Returned", observedGeneration=2, vms=home, returned=1),
        ]
    )
    final = follow_drain(lambda: next(bodies), io.StringIO(), live=False, poll_seconds=0)
    assert final["phase"] == "Returned" and exit_code(final["phase"]) == EXIT_OK


@pytest.mark.parametrize(
    ("spec", "phase", "observed", "ended"),
    [
        ({}, "Drained", 1, True),
        ({"returnGuests": True}, "Drained", 1, True),  # the maintenance is the user's to do
        ({"returnGuests": True, "maintenanceDone": True}, "Drained", 1, False),
        ({"returnGuests": True, "maintenanceDone": True}, "Returning", 1, False),
        ({"returnGuests": True, "maintenanceDone": True}, "Returned", 1, True),
        ({"returnGuests": True, "maintenanceDone": True}, "Blocked", 1, True),  # spec refused
        ({}, "Failed", 0, False),  # written for an older spec: the new one may yet run
        ({}, "Cancelled", None, True),
    ],
)
def test_a_drain_ends_as_its_spec_asks(
    spec: dict[str, Any], phase: str, observed: int | None, ended: bool
) -> None:
    status = {"phase": phase, **({} if observed is None else {"observedGeneration": observed})}
    assert drain_ended({"metadata": {"generation": 1}, "spec": spec, "status": status}) is ended


def test_follow_fails_when_the_drain_disappears() -> None:
    with pytest.raises(PluginError, match="deleted"):
        follow_drain(lambda: None, io.StringIO(), live=True, poll_seconds=0)


def test_parser_reads_drain_options() -> None:
    args = build_parser().parse_args(
        ["-n", "ops", "drain", "pve1", "--proxmox-cluster", "lab", "--max-parallel", "4", "--wait"]
    )
    assert (args.namespace, args.node, args.proxmox_cluster, args.max_parallel) == (
        "ops",
        "pve1",
        "lab",
        4,
    )
    assert args.wait and not args.dry_run and args.timeout is None


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "ops", "--context", "c", "--kubeconfig", "k", "-o", "wide", "status"],
        ["status", "-n", "ops", "--context", "c", "--kubeconfig", "k", "-o", "wide"],
        ["--context", "c", "status", "--namespace=ops", "--output=wide", "--kubeconfig=k"],
    ],
)
def test_kubectl_flags_anywhere_on_the_line(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.namespace, args.context, args.kubeconfig, args.output) == ("ops", "c", "k", "wide")


def test_flags_not_given_keep_their_defaults() -> None:
    args = build_parser().parse_args(["status"])
    assert (args.namespace, args.context, args.kubeconfig, args.output) == (None, None, None, None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400)]
)
def test_timeouts_read_like_kubectls(text: str, seconds: float) -> None:
    assert duration(text) == seconds
    assert build_parser().parse_args(["drain", "a", "--wait", "--timeout", text]).timeout == seconds


@pytest.mark.parametrize(
    "argv",
    [
        ["drain", "a", "--timeout", "soon"],
        ["status", "-o", "table"],
        ["drain", "a", "--cluster", "lab"],  # kubectl's --cluster is a kubeconfig cluster
        ["frobnicate"],
    ],
)
def test_bad_usage_is_one_line_and_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("kubectl proxmigrate"), err


def test_printer_columns_are_the_crds() -> None:
    for plural, columns in PRINTER_COLUMNS.items():
        crd = yaml.safe_load((REPO_ROOT / "crds" / f"{plural}.yaml").read_text())
        declared = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        assert [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in declared] == list(columns)


def test_outputs_name_json_and_yaml_like_kubectl() -> None:
    drain = {"kind": "NodeDrain", "metadata": {"name": "d"}, "spec": {"nodeName": "pve1"}}
    placement = {"kind": "VMPlacement", "metadata": {"name": "p"}}
    assert render_output([drain, placement], "name") == (
        "nodedrain.proxmigrate.dev/d\nvmplacement.proxmigrate.dev/p"
    )
    assert json.loads(render_output([drain], "json")) == drain
    listed = yaml.safe_load(render_output([drain, placement], "yaml"))
    assert listed["kind"] == "List" and listed["items"] == [drain, placement]


def test_follow_gives_up_at_the_timeout_with_its_own_status() -> None:
    with pytest.raises(PluginError, match="timed out after") as error:
        follow_drain(
            lambda: {"status": draining()}, io.StringIO(), live=False, poll_seconds=0, timeout=0
        )
    assert error.value.code == EXIT_TIMEOUT == 4


def test_an_api_server_that_does_not_answer_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: ops}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    assert main(["status", "--kubeconfig", str(config)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(
        f"error: the Kubernetes API server http://127.0.0.1:{port} does not answer"
    )


def test_an_unknown_context_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    assert main(["status", "--kubeconfig", str(config), "--context", "nope"]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith("error: cannot load kubeconfig")


@pytest.mark.parametrize(
    ("command", "module", "hint"),
    [(["status"], "cmd_status", False), (["drain", "pve1", "--wait"], "cmd_drain", True)],
)
def test_ctrl_c_mentions_the_drain_only_where_one_runs(
    command: list[str],
    module: str,
    hint: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(f"proxmigrate.kubectl.cli.{module}", interrupted)
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    assert main([*command, "--kubeconfig", str(config)]) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith("interrupted") and ("NodeDrain keeps running" in err) == hint
