"""References to other objects, as every kind's spec writes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


def raw_cluster_name(spec: Any) -> str | None:
    """`spec.clusterRef.name` of a raw spec that may not be valid (watch events, deletions,
    metric labels), or None where there is none."""
    ref = spec.get("clusterRef") if isinstance(spec, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return str(name) if name else None


def cluster_name(spec: SpecReader) -> str:
    """`spec.clusterRef.name`: the ProxmoxCluster in the object's own namespace."""
    return spec.child("clusterRef").get("name", str)
