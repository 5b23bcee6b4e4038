"""What `kubectl get` would print: tables with the CRDs' printer columns, `-o json|yaml|name`,
the plan of a drain and its one-line summary. Pure functions, shared with `make demo`."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from proxmigrate.api.conditions import ConditionType, find_condition
from proxmigrate.api.constants import GROUP, NODEDRAINS, NODEMAINTENANCES, VMPLACEMENTS
from proxmigrate.api.timestamps import format_duration, parse_rfc3339
from proxmigrate.planning.units import format_bytes

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
        ("Returned", ".status.returned", 1),
    ),
    VMPLACEMENTS: (
        ("VM", ".status.vm", 0),
        ("Desired", ".status.desiredNode", 0),
        ("Current", ".status.currentNode", 0),
        ("Synced", ".status.inSync", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Policy", ".spec.policy", 1),
    ),
    NODEMAINTENANCES: (
        ("Phase", ".status.phase", 0),
        ("Node", ".status.currentNodes", 0),
        ("Step", ".status.stepPhase", 0),
        ("Done", ".status.done", 0),
        ("Total", ".status.total", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Migrated", ".status.migrated", 1),
        ("Parked", ".status.parked", 1),
    ),
}


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


def object_name(obj: Mapping[str, Any]) -> str:
    """`kind.group/name`, as `kubectl get -o name` prints an object."""
    return f"{str(obj['kind']).lower()}.{GROUP}/{obj['metadata']['name']}"


def render_output(objects: Sequence[Mapping[str, Any]], output: str) -> str:
    """`-o json|yaml|name` of objects, as kubectl prints them (one object, or a List)."""
    if output == "name":
        return "\n".join(object_name(o) for o in objects)
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
    if "returned" in status:
        line += (
            f"; {int(status['returned'])} returned home, "
            f"{int(status.get('returnSkipped') or 0)} return skipped, "
            f"{int(status.get('returnFailed') or 0)} return failed"
        )
    reason = problem(status)
    return f"{line}\n{reason}" if reason else line
