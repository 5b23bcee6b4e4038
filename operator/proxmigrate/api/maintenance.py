"""`NodeMaintenance.spec` as typed values, defaults applied as in crds/nodemaintenances.yaml,
and the NodeDrain spec it gives each node."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.api.enums import DoneSignal, FailurePolicy
from proxmigrate.api.fields import SpecError, SpecReader
from proxmigrate.api.refs import cluster_name

# The done-signal by annotation: its value names the nodes whose maintenance is over.
DONE_ANNOTATION = "proxmigrate.dev/maintenance-done"
# On each NodeDrain a NodeMaintenance creates: the maintenance's name (as a label value).
MAINTENANCE_LABEL = "proxmigrate.dev/maintenance"


@dataclass(frozen=True)
class NodeMaintenanceSpec:
    cluster_name: str
    nodes: tuple[str, ...]
    nodes_at_once: int = 1
    return_guests: bool = True
    done_signal: DoneSignal = DoneSignal.ANNOTATION
    on_failure: FailurePolicy = FailurePolicy.STOP
    paused: bool = False
    dry_run: bool = False
    # as written (defaults filled or not): what it means is `drain(node)`, compared there
    drain_template: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_spec(cls, data: Mapping[str, Any] | None, path: str = "spec") -> NodeMaintenanceSpec:
        reader = SpecReader(data, path)
        nodes = reader.list_of("nodes", str)
        if not nodes:
            raise SpecError(f"{path}.nodes must list at least one node")
        template = (data or {}).get("drainTemplate") or {}
        if not isinstance(template, Mapping):
            raise SpecError(f"{path}.drainTemplate: expected an object")
        spec = cls(
            cluster_name=cluster_name(reader),
            nodes=nodes,
            nodes_at_once=reader.get("nodesAtOnce", int, 1),
            return_guests=reader.get("returnGuests", bool, True),
            done_signal=reader.child("done").get("signal", DoneSignal, DoneSignal.ANNOTATION),
            on_failure=reader.get("onFailure", FailurePolicy, FailurePolicy.STOP),
            paused=reader.get("paused", bool, False),
            dry_run=reader.get("dryRun", bool, False),
            drain_template=copy.deepcopy(dict(template)),
        )
        if spec.nodes_at_once < 1:
            raise SpecError(f"{path}.nodesAtOnce must be at least 1, got {spec.nodes_at_once}")
        spec.drain(nodes[0], ())  # the template must make a valid NodeDrain spec
        return spec

    def drain_document(self, node: str, avoid: Sequence[str]) -> dict[str, Any]:
        """The `spec` of `node`'s NodeDrain: the template, the node (removed from the
        template's targets), the return and the later nodes to avoid."""
        document: dict[str, Any] = {
            **copy.deepcopy(dict(self.drain_template)),
            "clusterRef": {"name": self.cluster_name},
            "nodeName": node,
            "returnGuests": self.return_guests,
        }
        if "targets" in document:
            document["targets"] = [t for t in document["targets"] if t != node]
        if avoid:
            document["avoidTargets"] = list(avoid)
        return document

    def drain(self, node: str, avoid: Sequence[str]) -> NodeDrainSpec:
        """`drain_document` parsed, as the NodeDrain controller will read it."""
        return NodeDrainSpec.from_spec(self.drain_document(node, avoid), "spec.drainTemplate")


def done_nodes(annotations: Mapping[str, str] | None) -> frozenset[str]:
    """The nodes the done annotation names (separated by commas or spaces)."""
    value = (annotations or {}).get(DONE_ANNOTATION) or ""
    return frozenset(name for name in value.replace(",", " ").split() if name)
