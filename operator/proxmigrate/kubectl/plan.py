"""`plan NODE`: a dry-run NodeDrain created, its plan printed, the drain deleted;
`plan --maintenance NODE...`: the same with a dry-run NodeMaintenance, its plan per step."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from proxmigrate.api.constants import API_VERSION, NODE_MAINTENANCE, NODEDRAINS, NODEMAINTENANCES
from proxmigrate.kubectl.drain import check_node, drain_manifest, resolve_cluster
from proxmigrate.kubectl.errors import EXIT_NOT_DRAINED, EXIT_OK, EXIT_USAGE, PluginError
from proxmigrate.kubectl.progress import wait_plan
from proxmigrate.kubectl.session import Session
from proxmigrate.kubectl.tables import render_output, render_plan, render_table
from proxmigrate.planning.units import format_bytes


def cmd_plan(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    if args.maintenance is not None:
        return _plan_maintenance(session, args, out)
    if args.node is None:
        raise PluginError(
            "name the node to plan: plan NODE, or plan --maintenance NODE...", EXIT_USAGE
        )
    cluster = resolve_cluster(session, args.proxmox_cluster)
    check_node(cluster, args.node)
    body = drain_manifest(
        args.node, cluster["metadata"]["name"], generate_name=f"plan-{args.node}-", dry_run=True
    )
    name = session.create(NODEDRAINS, body)["metadata"]["name"]
    try:
        status = wait_plan(lambda: session.get(NODEDRAINS, name), args.timeout or 60.0)
    finally:
        session.delete(NODEDRAINS, name)
    if args.output in ("json", "yaml"):
        out.write(render_output([status["plan"]], args.output) + "\n")
    else:
        out.write(render_plan(status["plan"]) + "\n")
    return EXIT_NOT_DRAINED if status["plan"].get("unplaceable") else EXIT_OK


def maintenance_manifest(
    nodes: Sequence[str], cluster: str, *, at_once: int, return_guests: bool
) -> dict[str, Any]:
    """A dry-run NodeMaintenance: the operator writes its plan and creates no NodeDrain."""
    return {
        "apiVersion": API_VERSION,
        "kind": NODE_MAINTENANCE.kind,
        "metadata": {"generateName": "plan-maintenance-"},
        "spec": {
            "clusterRef": {"name": cluster},
            "nodes": list(nodes),
            "nodesAtOnce": at_once,
            "returnGuests": return_guests,
            "dryRun": True,
        },
    }


def _plan_maintenance(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    nodes: list[str] = ([args.node] if args.node else []) + list(args.maintenance)
    if not nodes:
        raise PluginError("--maintenance needs the nodes to maintain, in order", EXIT_USAGE)
    repeated = sorted({node for node in nodes if nodes.count(node) > 1})
    if repeated:
        raise PluginError(f"node {repeated[0]} is listed more than once", EXIT_USAGE)
    if args.nodes_at_once < 1:
        raise PluginError(
            f"--nodes-at-once must be at least 1, got {args.nodes_at_once}", EXIT_USAGE
        )
    cluster = resolve_cluster(session, args.proxmox_cluster)
    for node in nodes:
        check_node(cluster, node)
    body = maintenance_manifest(
        nodes,
        cluster["metadata"]["name"],
        at_once=args.nodes_at_once,
        return_guests=not args.no_return,
    )
    name = session.create(NODEMAINTENANCES, body)["metadata"]["name"]
    try:
        status = wait_plan(lambda: session.get(NODEMAINTENANCES, name), args.timeout or 60.0)
    finally:
        session.delete(NODEMAINTENANCES, name)
    steps = status["plan"].get("steps") or []
    if args.output in ("json", "yaml"):
        out.write(render_output([status["plan"]], args.output) + "\n")
    else:
        out.write(render_maintenance_plan(steps) + "\n")
    return EXIT_NOT_DRAINED if any(step.get("blocked") for step in steps) else EXIT_OK


def render_maintenance_plan(steps: Sequence[Mapping[str, Any]]) -> str:
    """`status.plan.steps` of a NodeMaintenance: one row per step, then what blocks."""
    table = render_table(
        ["STEP", "NODES", "MOVES", "RETURNS", "MEMORY", "PARKED", "TARGETS"],
        [
            [
                step["step"],
                ",".join(step.get("nodes") or []),
                step.get("moves", 0),
                step.get("returns", 0),
                format_bytes(int(step.get("bytes") or 0)),
                step.get("parked", 0),
                step.get("targets") or "-",
            ]
            for step in steps
        ],
    )
    lines = [table]
    moves = sum(int(s.get("moves") or 0) + int(s.get("returns") or 0) for s in steps)
    memory = sum(int(s.get("bytes") or 0) for s in steps)
    lines.append(f"{len(steps)} steps, {moves} migrations, {format_bytes(memory)} to transfer")
    for step in steps:
        if step.get("returnSkipped"):
            lines.append(f"step {step['step']}: {step['returnSkipped']} guests would not return")
        if step.get("blocked"):
            lines.append(f"blocked: {step['blocked']}")
    return "\n".join(lines)
