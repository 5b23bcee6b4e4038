"""`drain NODE` and `cancel NODE`: create or delete the node's NodeDrain."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from kubernetes.client.exceptions import ApiException

from proxmigrate.api.constants import API_VERSION, NODE_DRAIN, NODEDRAINS, PROXMOXCLUSTERS
from proxmigrate.kubectl.errors import EXIT_OK, PluginError, exit_code
from proxmigrate.kubectl.progress import follow_drain, wait_plan
from proxmigrate.kubectl.session import Session, api_message
from proxmigrate.kubectl.tables import render_output, render_plan, render_summary


def resolve_cluster(session: Session, name: str | None) -> dict[str, Any]:
    """The ProxmoxCluster named, or the only one in the namespace."""
    if name is not None:
        cluster = session.get(PROXMOXCLUSTERS, name)
        if cluster is None:
            raise PluginError(f"ProxmoxCluster {name} not found in namespace {session.namespace}")
        return cluster
    clusters = session.list_objects(PROXMOXCLUSTERS)
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
        raise PluginError(f"creating NodeDrain {name}: {api_message(error)}") from None
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
        status = wait_plan(lambda: session.get(NODEDRAINS, name), args.timeout)
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
    drains = [d for d in session.list_objects(NODEDRAINS) if d["spec"].get("nodeName") == args.node]
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
