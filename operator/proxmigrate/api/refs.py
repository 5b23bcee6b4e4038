"""References to other objects, as every kind's spec writes them."""

from __future__ import annotations

from dataclasses import dataclass

from proxmigrate.api.fields import SpecReader


@dataclass(frozen=True)
class SecretRef:
    """A Secret, in `namespace` or else in the referring object's namespace."""

    name: str
    namespace: str | None = None

    @classmethod
    def read(cls, reader: SpecReader) -> SecretRef:
        return cls(reader.get("name", str), reader.get("namespace", str, None))

    def namespace_or(self, default: str) -> str:
        return self.namespace or default


def cluster_name(spec: SpecReader) -> str:
    """`spec.clusterRef.name`: the ProxmoxCluster in the object's own namespace."""
    return spec.child("clusterRef").get("name", str)
