"""`release-finalizers`: let Kubernetes delete our objects once the operator is gone.

While the operator runs, kopf keeps FINALIZER on every object of the five kinds so that its
deletion handlers run (cancel queued migrations, detach running ones, lift the cordon). With
no operator left, deleting such an object, or its CRD, waits forever. This removes that one
finalizer (other controllers' stay) and nothing else: no object is deleted by it, nothing on
the PVE side is touched. It refuses while kopf's peering objects show a live replica, whose
own deletion handlers are the right way out (`--force` overrides).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from kubernetes.client.exceptions import ApiException

from proxmigrate.api.constants import FINALIZER, RESOURCES
from proxmigrate.api.timestamps import format_duration, parse_rfc3339
from proxmigrate.kubectl.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, PluginError
from proxmigrate.kubectl.session import Session, api_message
from proxmigrate.kubectl.tables import object_name


def live_replicas(
    peerings: Iterable[Mapping[str, Any]], peering: str, now: datetime.datetime
) -> list[str]:
    """The replicas alive in the peering objects named `peering`, as kopf judges them
    (kopf._core.engines.peering.Peer: alive until lastseen + lifetime), one line each."""
    alive = []
    for obj in peerings:
        meta = obj.get("metadata") or {}
        if meta.get("name") != peering:
            continue
        where = f"{obj.get('kind', 'KopfPeering')} " + "/".join(
            filter(None, (meta.get("namespace"), meta.get("name")))
        )
        for identity, peer in (obj.get("status") or {}).items():
            if not isinstance(peer, Mapping) or not peer.get("lastseen"):
                continue
            seen = parse_rfc3339(str(peer["lastseen"]))
            lifetime = datetime.timedelta(seconds=int(peer.get("lifetime") or 60))
            if seen + lifetime > now:
                ago = format_duration(max(0.0, (now - seen).total_seconds()))
                alive.append(f"{where}: {identity} (last seen {ago} ago)")
    return alive


def held(objects: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], int]]:
    """The objects carrying our finalizer, with its index in metadata.finalizers."""
    found = []
    for obj in objects:
        finalizers = list((obj.get("metadata") or {}).get("finalizers") or [])
        if FINALIZER in finalizers:
            found.append((obj, finalizers.index(FINALIZER)))
    return found


def removal(index: int) -> list[dict[str, Any]]:
    """A JSON patch removing our finalizer at `index`, or failing if it moved meanwhile."""
    path = f"/metadata/finalizers/{index}"
    return [{"op": "test", "path": path, "value": FINALIZER}, {"op": "remove", "path": path}]


def outcome(meta: Mapping[str, Any]) -> str:
    """What follows the removal: nothing, the deletion done, or other finalizers to wait on."""
    if not meta.get("deletionTimestamp"):
        return ""
    others = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
    if others:
        return f"; it is being deleted, once {', '.join(others)} is removed too"
    return "; it was being deleted: gone"


def describe(obj: Mapping[str, Any], all_namespaces: bool) -> str:
    name = object_name(obj)
    namespace = obj["metadata"].get("namespace")
    return f"{name} -n {namespace}" if all_namespaces and namespace else name


def cmd_release_finalizers(session: Session, args: argparse.Namespace, out: TextIO) -> int:
    if args.output not in (None, "name"):
        raise PluginError(f"release-finalizers prints no {args.output}: -o name only", EXIT_USAGE)
    everywhere = bool(args.all_namespaces)
    if not args.force:
        try:
            peerings = session.peerings(None if everywhere else [session.namespace])
        except ApiException as error:
            raise PluginError(
                f"cannot read kopf's peering objects ({api_message(error)}), so cannot tell "
                "whether the operator runs; pass --force if you know it is gone"
            ) from None
        alive = live_replicas(peerings, args.peering, datetime.datetime.now(datetime.UTC))
        if alive:
            raise PluginError(
                "the operator is running (" + "; ".join(alive) + "): delete the objects and "
                "let it finish them; --force releases anyway, skipping its deletion handlers"
            )
    targets = [
        (resource.plural, obj, index)
        for resource in RESOURCES
        for obj, index in held(_listed(session, resource.plural, everywhere))
    ]
    scope = "any namespace" if everywhere else f"namespace {session.namespace}"
    if not targets:
        out.write(f"no proxmigrate object holds {FINALIZER} in {scope}\n")
        return EXIT_OK
    if not args.yes and not confirm([describe(o, everywhere) for _, o, _ in targets], out):
        raise PluginError(f"nothing changed: pass --yes to release {len(targets)} finalizers")
    failures = 0
    for plural, obj, index in targets:
        meta = obj["metadata"]
        label = describe(obj, everywhere)
        try:
            session.json_patch(plural, meta["namespace"], meta["name"], removal(index))
        except ApiException as error:
            if error.status == 404:
                out.write(f"{label} already gone\n")
                continue
            failures += 1
            # 422: the `test` operation failed, the finalizers changed since they were read
            detail = (
                "its finalizers changed meanwhile; run the command again"
                if error.status == 422
                else api_message(error)
            )
            print(f"error: {label}: {detail}", file=sys.stderr)
            continue
        if args.output == "name":
            out.write(f"{object_name(obj)}\n")
        else:
            out.write(f"{label} finalizer {FINALIZER} removed{outcome(meta)}\n")
    return EXIT_ERROR if failures else EXIT_OK


def confirm(labels: Sequence[str], out: TextIO) -> bool:
    """Ask on a terminal; a script must say --yes."""
    out.write(f"{FINALIZER} would be removed from:\n")
    out.writelines(f"  {label}\n" for label in labels)
    if not sys.stdin.isatty():
        return False
    out.write(f"release {len(labels)} finalizers? [y/N] ")
    out.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _listed(session: Session, plural: str, everywhere: bool) -> list[dict[str, Any]]:
    """The kind's objects; none when its CRD is gone (deleted already, its objects with it,
    or an install from before the kind existed)."""
    try:
        return list(session.list_objects(plural, all_namespaces=everywhere))
    except ApiException as error:
        if error.status == 404:
            return []
        raise
