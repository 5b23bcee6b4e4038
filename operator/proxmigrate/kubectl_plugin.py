"""`kubectl proxmigrate`: drain, cancel, plan and watch from the command line.

Installed as the console script `kubectl-proxmigrate`, which kubectl runs as a plugin. It
only creates, reads and deletes NodeDrains (the operator does the rest), so it needs
nothing but the user's kubeconfig. Flags follow kubectl's: `-n/--namespace`, `--context`,
`--kubeconfig` and `-o json|yaml|wide|name` anywhere on the line, tables with the CRDs'
printer columns, and exit statuses a script can test (EXIT_*). The `render_*` functions are
pure and shared with `make demo`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from proxmigrate.api.conditions import ConditionType, find_condition
from proxmigrate.api.constants import (
    API_VERSION,
    GROUP,
    NODE_DRAIN,
    NODEDRAINS,
    PROXMOXCLUSTERS,
    VERSION,
    VMPLACEMENTS,
)
from proxmigrate.api.enums import DrainPhase
from proxmigrate.api.timestamps import format_duration, parse_rfc3339
from proxmigrate.cliutil import Parser
from proxmigrate.planning.units import format_bytes

FINAL_PHASES = frozenset(
    {DrainPhase.DRAINED, DrainPhase.FAILED, DrainPhase.BLOCKED, DrainPhase.CANCELLED}
)
POLL_SECONDS = 1.0
BAR_WIDTH = 24
# Exit statuses: a script tells "the drain did not end well" from "could not ask".
EXIT_OK = 0  # done; a drain waited for ended Drained
EXIT_ERROR = 1  # the request failed: API server, kubeconfig, object or node not found
EXIT_USAGE = 2  # bad flags or arguments
EXIT_NOT_DRAINED = 3  # the drain ended Failed, Blocked or Cancelled; a plan leaves VMs behind
EXIT_TIMEOUT = 4  # --timeout passed before the drain ended (it keeps running)
# The CRDs' additionalPrinterColumns (crds/*.yaml; a test keeps them equal): name, JSONPath,
# priority (1: only with -o wide). AGE is rendered as kubectl does.
PRINTER_COLUMNS: dict[str, tuple[tuple[str, str, int], ...]] = {
    NODEDRAINS: (
        ("Node", ".spec.nodeName", 0),
        ("Phase", ".status.phase", 0),
        ("Migrated", ".status.migrated", 0),
        ("Remaining", ".status.remaining", 0),
        ("Failed", ".status.failed", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Progress", ".status.progress", 1),
        ("ETA", ".status.eta", 1),
    ),
    VMPLACEMENTS: (
        ("VM", ".status.vm", 0),
        ("Desired", ".status.desiredNode", 0),
        ("Current", ".status.currentNode", 0),
        ("Synced", ".status.inSync", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Policy", ".spec.policy", 1),
    ),
}
OUTPUTS = ("json", "yaml", "wide", "name")


class PluginError(Exception):
    """A problem the user must fix; printed as `error: <message>` with status `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ----- pure rendering ------------------------------------------------------------------------


def progress_bar(ratio: float, width: int = BAR_WIDTH) -> str:
    """`[#########---------------]`; the ratio is clamped to 0..1."""
    filled = round(max(0.0, min(1.0, ratio)) * width)
    return f"[{'#' * filled}{'-' * (width - filled)}]"


def throughput(status: Mapping[str, Any], now: datetime.datetime) -> float | None:
    """Bytes of guest memory moved per second since the drain started; None before."""
    started = status.get("startTime")
    moved = int(status.get("memoryBytesMigrated") or 0)
    if not started or moved <= 0:
        return None
    elapsed = (now - parse_rfc3339(started)).total_seconds()
    return moved / elapsed if elapsed > 0 else None


def render_progress(status: Mapping[str, Any], now: datetime.datetime) -> str:
    """One line: bar, VMs done/total, failures, throughput, ETA and phase."""
    total = int(status.get("total") or 0)
    done = total - int(status.get("remaining") or 0) if total else 0
    parts = [
        progress_bar(float(status.get("progress") or 0.0)),
        f"{done}/{total} VMs",
        f"{int(status.get('migrated') or 0)} migrated",
        f"{int(status.get('failed') or 0)} failed",
    ]
    if status.get("skipped"):
        parts.append(f"{int(status['skipped'])} skipped")
    rate = throughput(status, now)
    if rate is not None:
        parts.append(f"{format_bytes(round(rate))}/s")
    if status.get("eta"):
        parts.append(f"ETA {status['eta']}")
    parts.append(str(status.get("phase") or "Pending"))
    return "  ".join(parts)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded like kubectl's tables (two spaces between columns)."""
    cells = [list(headers)] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def render_plan(plan: Mapping[str, Any]) -> str:
    """status.plan as a table of moves, then the guests that cannot be placed."""
    entries = plan.get("entries") or []
    lines = [
        render_table(
            ["ORDER", "VMID", "NAME", "MEMORY", "FROM", "TO"],
            [
                [
                    e.get("order"),
                    e["vmid"],
                    e.get("name", ""),
                    format_bytes(int(e.get("memoryBytes") or 0)),
                    e.get("from", ""),
                    e["to"],
                ]
                for e in entries
            ],
        )
    ]
    memory = sum(int(e.get("memoryBytes") or 0) for e in entries)
    lines.append(f"{len(entries)} VMs to move, {format_bytes(memory)} of memory")
    unplaceable = plan.get("unplaceable") or []
    if unplaceable:
        lines.append(f"{len(unplaceable)} VMs cannot be placed:")
        lines += [f"  {u['vmid']} ({u.get('name', '')}): {u['reason']}" for u in unplaceable]
        missing = int(plan.get("missingMemoryBytes") or 0)
        if missing:
            lines.append(f"memory missing on the targets: {format_bytes(missing)}")
    return "\n".join(lines)


def column_value(obj: Mapping[str, Any], path: str) -> Any:
    """A printer column's simple JSONPath (`.a.b`) in `obj`; None where it is missing."""
    value: Any = obj
    for key in path.strip(".").split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def render_objects(
    plural: str, objects: Sequence[Mapping[str, Any]], now: datetime.datetime, wide: bool = False
) -> str:
    """The table `kubectl get <plural>` prints: NAME, then the CRD's printer columns."""
    columns = [c for c in PRINTER_COLUMNS[plural] if wide or c[2] == 0]
    rows = []
    for obj in objects:
        row: list[object] = [obj["metadata"]["name"]]
        for name, path, _ in columns:
            value = column_value(obj, path)
            if name == "Age" and value:
                age = (now - parse_rfc3339(str(value))).total_seconds()
                value = format_duration(max(0.0, age))
            row.append("<none>" if value is None or value == "" else value)
        rows.append(row)
    return render_table(["NAME", *(c[0].upper() for c in columns)], rows)


def render_drains(drains: Sequence[Mapping[str, Any]], wide: bool = False) -> str:
    return render_objects(NODEDRAINS, drains, datetime.datetime.now(datetime.UTC), wide)


def render_placements(placements: Sequence[Mapping[str, Any]], wide: bool = False) -> str:
    return render_objects(VMPLACEMENTS, placements, datetime.datetime.now(datetime.UTC), wide)


def render_output(objects: Sequence[Mapping[str, Any]], output: str) -> str:
    """`-o json|yaml|name` of objects, as kubectl prints them (one object, or a List)."""
    if output == "name":
        return "\n".join(
            f"{str(o['kind']).lower()}.{GROUP}/{o['metadata']['name']}" for o in objects
        )
    document: Any = (
        dict(objects[0])
        if len(objects) == 1
        else {"apiVersion": "v1", "kind": "List", "items": list(objects), "metadata": {}}
    )
    if output == "json":
        return json.dumps(document, indent=4)
    return str(yaml.safe_dump(document, sort_keys=False)).rstrip("\n")


def problem(status: Mapping[str, Any]) -> str | None:
    """The message of a True Degraded condition: why a drain is Blocked or Failed."""
    degraded = find_condition(status.get("conditions"), ConditionType.DEGRADED)
    if degraded is not None and degraded.get("status") == "True":
        return str(degraded.get("message", ""))
    return None


def render_summary(name: str, status: Mapping[str, Any]) -> str:
    phase = status.get("phase", "Pending")
    line = (
        f"nodedrain/{name} {phase}: {int(status.get('migrated') or 0)} migrated, "
        f"{int(status.get('failed') or 0)} failed, {int(status.get('skipped') or 0)} skipped "
        f"of {int(status.get('total') or 0)}"
    )
    start, end = status.get("startTime"), status.get("completionTime")
    if start and end:
        line += (
            f" in {format_duration((parse_rfc3339(end) - parse_rfc3339(start)).total_seconds())}"
        )
    reason = problem(status)
    return f"{line}\n{reason}" if reason else line


def exit_code(phase: str | None) -> int:
    """EXIT_OK when the drain ended Drained; EXIT_NOT_DRAINED for Failed, Blocked, Cancelled."""
    return EXIT_OK if phase == DrainPhase.DRAINED else EXIT_NOT_DRAINED


# ----- API access ----------------------------------------------------------------------------


class Session:
    """The user's kubeconfig and namespace, with the few calls the plugin makes."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context)
        except config.ConfigException as error:
            raise PluginError(f"cannot load kubeconfig: {error}") from None
        self.server = str(self.api.configuration.host)
        self.namespace = namespace or _context_namespace(kubeconfig, context)
        self.custom = client.CustomObjectsApi(self.api)

    def list(self, plural: str) -> list[dict[str, Any]]:
        answer = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        return list(answer.get("items", []))

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, name
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, body
            )
        )

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def resolve_cluster(session: Session, name: str | None) -> dict[str, Any]:
    """The ProxmoxCluster named, or the only one in the namespace."""
    if name is not None:
        cluster = session.get(PROXMOXCLUSTERS, name)
        if cluster is None:
            raise PluginError(f"ProxmoxCluster {name} not found in namespace {session.namespace}")
        return cluster
    clusters = session.list(PROXMOXCLUSTERS)
    if not clusters:
        raise PluginError(
            f"no ProxmoxCluster in namespace {session.namespace}; create one "
            "(examples/proxmoxcluster.yaml) or pass -n NAMESPACE"
        )
    if len(clusters) > 1:
        names = ", ".join(sorted(c["metadata"]["name"] for c in clusters))
        raise PluginError(
            f"several ProxmoxClusters in {session.namespace} ({names}): use --proxmox-cluster"
        )
    return clusters[0]


def check_node(cluster: Mapping[str, Any], node: str) -> None:
    """Refuse a node the cluster's status does not list (skipped before the first sync)."""
    known = [str(n.get("name")) for n in (cluster.get("status") or {}).get("nodes") or []]
    if known and node not in known:
        raise PluginError(
            f"node {node} is not in ProxmoxCluster {cluster['metadata']['name']} "
            f"(nodes: {', '.join(sorted(known))})"
        )


def drain_manifest(
    node: str,
    cluster: str,
    *,
    name: str | None = None,
    generate_name: str | None = None,
    max_parallel: int | None = None,
    dry_run: bool = False,
    allow_partial: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": {"name": cluster}, "nodeName": node}
    if max_parallel is not None:
        spec["maxParallel"] = max_parallel
    if dry_run:
        spec["dryRun"] = True
    if allow_partial:
        spec["allowPartial"] = True
    metadata = {"name": name} if name else {"generateName": generate_name}
    return {"apiVersion": API_VERSION, "kind": NODE_DRAIN.kind, "metadata": metadata, "spec": spec}


def follow_drain(
    read: Callable[[], Mapping[str, Any] | None],
    out: TextIO,
    *,
    live: bool,
    poll_seconds: float = POLL_SECONDS,
    done: Callable[[Mapping[str, Any]], bool] = lambda s: s.get("phase") in FINAL_PHASES,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Show the drain's progress until `done(status)`; returns the last status.

    `live` rewrites one line (a terminal); otherwise a line is printed whenever the counts
    or the phase change (not for every new throughput figure, which would flood a log).
    After `timeout` seconds: PluginError with EXIT_TIMEOUT (the drain keeps running).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last_seen: tuple[object, ...] = ()
    while True:
        body = read()
        if body is None:
            raise PluginError("the NodeDrain was deleted")
        status = dict(body.get("status") or {})
        line = render_progress(status, datetime.datetime.now(datetime.UTC))
        seen = tuple(status.get(key) for key in ("phase", "total", "migrated", "failed", "skipped"))
        if live:
            out.write(f"\r{line}\033[K")
            out.flush()
        elif seen != last_seen:
            out.write(f"{line}\n")
        last_seen = seen
        if done(status):
            if live:
                out.write("\n")
            return status
        if deadline is not None and time.monotonic() >= deadline:
            if live:
                out.write("\n")
            raise PluginError(
                f"timed out after {format_duration(timeout or 0)} waiting for the drain to end "
                "(it keeps running)",
                EXIT_TIMEOUT,
            )
        time.sleep(poll_seconds)


# ----- commands ------------------------------------------------------------------------------


def cmd_drain(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    cluster = resolve_cluster(session, args.proxmox_cluster)
    check_node(cluster, args.node)
    name = args.name or f"drain-{args.node}"
    body = drain_manifest(
        args.node,
        cluster["metadata"]["name"],
        name=name,
        max_parallel=args.max_parallel,
        dry_run=args.dry_run,
        allow_partial=args.allow_partial,
    )
    try:
        created = session.create(NODEDRAINS, body)
    except ApiException as error:
        if error.status == 409:
            raise PluginError(
                f"NodeDrain {name} already exists: watch it with `kubectl proxmigrate status`, "
                f"or cancel it with `kubectl proxmigrate cancel {args.node}`"
            ) from None
        raise PluginError(f"creating NodeDrain {name}: {_api_message(error)}") from None
    machine = args.output in ("json", "yaml", "name")
    if not args.wait:
        out.write(
            (render_output([created], args.output) if machine else f"nodedrain/{name} created")
            + "\n"
        )
        return EXIT_OK
    if not machine:
        out.write(f"nodedrain/{name} created\n")
    if args.dry_run:
        status = _wait_plan(session, name, args.timeout)
        out.write(render_plan(status["plan"]) + "\n")
        return EXIT_OK
    status = follow_drain(
        lambda: session.get(NODEDRAINS, name),
        sys.stderr if machine else out,
        live=(sys.stderr if machine else out).isatty(),
        timeout=args.timeout,
    )
    if machine:
        out.write(render_output([session.get(NODEDRAINS, name) or created], args.output) + "\n")
    else:
        out.write(render_summary(name, status) + "\n")
    return exit_code(status.get("phase"))


def cmd_cancel(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    drains = [d for d in session.list(NODEDRAINS) if d["spec"].get("nodeName") == args.node]
    if not drains:
        raise PluginError(f"no NodeDrain for node {args.node} in namespace {session.namespace}")
    for drain in drains:
        session.delete(NODEDRAINS, drain["metadata"]["name"])
        if args.output == "name":
            out.write(render_output([drain], "name") + "\n")
            continue
        out.write(
            f"nodedrain/{drain['metadata']['name']} deleted: queued migrations are cancelled, "
            "running ones finish\n"
        )
    return EXIT_OK


def cmd_status(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    drains = session.list(NODEDRAINS)
    placements = session.list(VMPLACEMENTS)
    if args.output in ("json", "yaml", "name"):
        objects = [*drains, *placements]
        if args.output != "name" or objects:
            out.write(render_output(objects, args.output) + "\n")
        return EXIT_OK
    if not drains and not placements:
        out.write(f"no NodeDrains or VMPlacements in namespace {session.namespace}\n")
        return EXIT_OK
    wide = args.output == "wide"
    if drains:
        out.write(render_drains(drains, wide) + "\n")
        for drain in drains:
            reason = problem(drain.get("status") or {})
            if reason:
                out.write(f"  {drain['metadata']['name']}: {reason}\n")
    if placements:
        out.write(("\n" if drains else "") + render_placements(placements, wide) + "\n")
    return EXIT_OK


def cmd_plan(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    cluster = resolve_cluster(session, args.proxmox_cluster)
    check_node(cluster, args.node)
    body = drain_manifest(
        args.node, cluster["metadata"]["name"], generate_name=f"plan-{args.node}-", dry_run=True
    )
    name = session.create(NODEDRAINS, body)["metadata"]["name"]
    try:
        status = _wait_plan(session, name, args.timeout or 60.0)
    finally:
        session.delete(NODEDRAINS, name)
    if args.output in ("json", "yaml"):
        out.write(render_output([status["plan"]], args.output) + "\n")
    else:
        out.write(render_plan(status["plan"]) + "\n")
    return EXIT_NOT_DRAINED if status["plan"].get("unplaceable") else EXIT_OK


def _wait_plan(session: Session, name: str, timeout: float | None) -> dict[str, Any]:
    """Wait for a dry run's plan; a drain Blocked without one (bad node) is an error."""
    timeout = 60.0 if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (session.get(NODEDRAINS, name) or {}).get("status") or {}
        if status.get("plan"):
            return dict(status)
        if status.get("phase") == DrainPhase.BLOCKED:
            raise PluginError(problem(status) or "the plan could not be made")
        time.sleep(POLL_SECONDS / 2)
    raise PluginError(f"no plan after {timeout:.0f} s: is the operator running?", EXIT_TIMEOUT)


def _api_message(error: ApiException) -> str:
    return str(error.reason if not error.body else error.body)


def duration(text: str) -> float:
    """kubectl's durations: `90`, `90s`, `5m`, `1h30m`."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or parts is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 5m or 1h")
    hours, minutes, seconds = (int(part or 0) for part in parts.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _kubectl_flags(defaults: bool) -> argparse.ArgumentParser:
    """kubectl's global flags, accepted before or after the subcommand: the top level holds
    the defaults, the subcommands leave a flag unset unless it is given there."""
    flags = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    flags.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
    )
    flags.add_argument("--context", default=default(None), help="kubeconfig context to use")
    flags.add_argument(
        "-n", "--namespace", default=default(None), help="namespace (default: the context's)"
    )
    flags.add_argument(
        "-o", "--output", choices=OUTPUTS, default=default(None), help="json, yaml, wide or name"
    )
    flags.add_argument(
        "--debug", action="store_true", default=default(False), help="tracebacks of errors"
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    common = _kubectl_flags(defaults=False)
    parser = Parser(
        prog="kubectl proxmigrate",
        description="Drain Proxmox VE nodes with proxmigrate.",
        parents=[_kubectl_flags(defaults=True)],
        epilog=f"exit status: {EXIT_OK} ok (a waited-for drain ended Drained), {EXIT_ERROR} "
        f"error, {EXIT_USAGE} bad usage, {EXIT_NOT_DRAINED} the drain ended Failed/Blocked/"
        f"Cancelled or a plan leaves VMs behind, {EXIT_TIMEOUT} --timeout passed",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_, parents=[common])

    drain = command("drain", "move every guest off NODE")
    drain.add_argument("node")
    drain.add_argument("--proxmox-cluster", help="ProxmoxCluster (default: the only one)")
    drain.add_argument("--max-parallel", type=int, help="most migrations of this drain at once")
    drain.add_argument("--dry-run", action="store_true", help="only plan; move nothing")
    drain.add_argument("--allow-partial", action="store_true", help="move what fits")
    drain.add_argument("--name", help="NodeDrain name (default: drain-NODE)")
    drain.add_argument("--wait", action="store_true", help="show progress until the drain ends")
    drain.add_argument(
        "--timeout", type=duration, help="with --wait: give up after this long (e.g. 30m)"
    )
    drain.set_defaults(run=cmd_drain)
    cancel = command("cancel", "delete the NodeDrain of NODE")
    cancel.add_argument("node")
    cancel.set_defaults(run=cmd_cancel)
    status = command("status", "NodeDrains and VMPlacements")
    status.set_defaults(run=cmd_status)
    plan = command("plan", "show where NODE's guests would go; move nothing")
    plan.add_argument("node")
    plan.add_argument("--proxmox-cluster", help="ProxmoxCluster (default: the only one)")
    plan.add_argument("--timeout", type=duration, help="wait this long for the plan (60s)")
    plan.set_defaults(run=cmd_plan)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        session = Session(args.kubeconfig, args.context, args.namespace)
        try:
            return int(args.run(session, args, stream))
        except (HTTPError, OSError) as error:
            if args.debug:
                raise
            detail = str(getattr(error, "reason", None) or error).rsplit(": ", 1)[-1]
            raise PluginError(
                f"the Kubernetes API server {session.server} does not answer: {detail}"
            ) from None
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except ApiException as error:
        print(f"error: Kubernetes API: {_api_message(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "\ninterrupted (the NodeDrain keeps running; `kubectl proxmigrate cancel` stops it)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
