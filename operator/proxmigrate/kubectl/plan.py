"""`plan NODE`: a dry-run NodeDrain created, its plan printed, the drain deleted."""

from __future__ import annotations

import argparse
from typing import TextIO

from proxmigrate.api.constants import NODEDRAINS
from proxmigrate.kubectl.drain import check_node, drain_manifest, resolve_cluster
from proxmigrate.kubectl.errors import EXIT_NOT_DRAINED, EXIT_OK
from proxmigrate.kubectl.progress import wait_plan
from proxmigrate.kubectl.session import Session
from proxmigrate.kubectl.tables import render_output, render_plan


def cmd_plan(session: Session, args: argparse.Namespace, out: TextIO) -> int:
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
