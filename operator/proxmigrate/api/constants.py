"""Names of the proxmigrate API: group, version and the five resources (see crds/)."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "proxmigrate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# kopf's finalizer on every object of the five kinds while the operator runs (settings.py sets
# it); `kubectl proxmigrate release-finalizers` removes it when the operator is gone.
FINALIZER = f"{GROUP}/finalizer"


@dataclass(frozen=True)
class Resource:
    """One custom resource as the API server names it."""

    kind: str
    plural: str
    singular: str
    short_name: str

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


PROXMOX_CLUSTER = Resource("ProxmoxCluster", "proxmoxclusters", "proxmoxcluster", "pxc")
VM_MIGRATION = Resource("VMMigration", "vmmigrations", "vmmigration", "vmm")
NODE_DRAIN = Resource("NodeDrain", "nodedrains", "nodedrain", "nd")
VM_PLACEMENT = Resource("VMPlacement", "vmplacements", "vmplacement", "vmp")
NODE_MAINTENANCE = Resource("NodeMaintenance", "nodemaintenances", "nodemaintenance", "nm")
RESOURCES = (PROXMOX_CLUSTER, VM_MIGRATION, NODE_DRAIN, VM_PLACEMENT, NODE_MAINTENANCE)

PROXMOXCLUSTERS = PROXMOX_CLUSTER.plural
VMMIGRATIONS = VM_MIGRATION.plural
NODEDRAINS = NODE_DRAIN.plural
VMPLACEMENTS = VM_PLACEMENT.plural
NODEMAINTENANCES = NODE_MAINTENANCE.plural
