"""`status`: the namespace's NodeMaintenances, NodeDrains and VMPlacements, as `kubectl get`
shows them."""

from __future__ import annotations

import argparse
import datetime
from typing import TextIO

from proxmigrate.api.constants import NODEDRAINS, NODEMAINTENANCES, VMPLACEMENTS
from proxmigrate.kubectl.errors import EXIT_OK
from proxmigrate.kubectl.session import Session
from proxmigrate.kubectl.tables import (
    problem,
    render_drains,
    render_objects,
    render_output,
    render_placements,
)


def cmd_status(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    maintenances = session.list_objects(NODEMAINTENANCES)
    drains = session.list_objects(NODEDRAINS)
    placements = session.list_objects(VMPLACEMENTS)
    if args.output in ("json", "yaml", "name"):
        objects = [*maintenances, *drains, *placements]
        if args.output != "name" or objects:
            out.write(render_output(objects, args.output) + "\n")
        return EXIT_OK
    if not maintenances and not drains and not placements:
        out.write(
            f"no NodeMaintenances, NodeDrains or VMPlacements in namespace {session.namespace}\n"
        )
        return EXIT_OK
    wide = args.output == "wide"
    if maintenances:
        now = datetime.datetime.now(datetime.UTC)
        out.write(render_objects(NODEMAINTENANCES, maintenances, now, wide) + "\n\n")
    if drains:
        out.write(render_drains(drains, wide) + "\n")
        for drain in drains:
            reason = problem(drain.get("status") or {})
            if reason:
                out.write(f"  {drain['metadata']['name']}: {reason}\n")
    if placements:
        out.write(("\n" if drains else "") + render_placements(placements, wide) + "\n")
    return EXIT_OK
