"""The proxmigrate API (group proxmigrate.dev, v1alpha1) as Python: names, enums, typed specs.

The CRDs in crds/ are the source of truth; this package mirrors their names, enums and
defaults (tests/unit/test_crds.py checks that they agree), so controllers never read raw
spec dicts and never spell a phase or a condition type by hand.

- constants: GROUP, VERSION, API_VERSION, the four `Resource`s (kind, plural, short name).
- enums: phases and policies as StrEnums.
- conditions: `set_condition(...)` keeps metav1.Condition semantics on plain dicts.
- timestamps: RFC 3339 in and out, `format_duration` for ETAs.
- `*Spec.from_spec(dict)`: frozen dataclasses with defaults applied; `SpecError` names the
  offending field.
"""

from proxmigrate.api.cluster import (
    HandshakePacingSpec,
    InventorySpec,
    MigrationPolicySpec,
    PlacementSettings,
    ProxmoxClusterSpec,
    RetrySpec,
    TLSSpec,
    TransportRefusal,
)
from proxmigrate.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    find_condition,
    is_condition_true,
    set_condition,
)
from proxmigrate.api.constants import (
    API_VERSION,
    GROUP,
    NODE_DRAIN,
    NODE_MAINTENANCE,
    NODEDRAINS,
    NODEMAINTENANCES,
    PROXMOX_CLUSTER,
    PROXMOXCLUSTERS,
    RESOURCES,
    VERSION,
    VM_MIGRATION,
    VM_PLACEMENT,
    VMMIGRATIONS,
    VMPLACEMENTS,
    Resource,
)
from proxmigrate.api.drain import NodeDrainSpec
from proxmigrate.api.enums import (
    AttemptOutcome,
    AuthMethod,
    ClusterMigrationType,
    DrainPhase,
    DrainVMPhase,
    LocalDisksPolicy,
    MigrationPhase,
    MigrationType,
    PlacementPolicy,
    StoppedVMsPolicy,
    TemplatesPolicy,
)
from proxmigrate.api.fields import SpecError
from proxmigrate.api.maintenance import NodeMaintenanceSpec
from proxmigrate.api.migration import VMMigrationSpec
from proxmigrate.api.placement import FlapGuardSpec, VMPlacementSpec
from proxmigrate.api.refs import SecretRef
from proxmigrate.api.timestamps import format_duration, parse_rfc3339, to_rfc3339
from proxmigrate.endpoint import Endpoint

__all__ = [
    "API_VERSION",
    "GROUP",
    "NODEDRAINS",
    "NODEMAINTENANCES",
    "NODE_DRAIN",
    "NODE_MAINTENANCE",
    "PROXMOXCLUSTERS",
    "PROXMOX_CLUSTER",
    "RESOURCES",
    "VERSION",
    "VMMIGRATIONS",
    "VMPLACEMENTS",
    "VM_MIGRATION",
    "VM_PLACEMENT",
    "AttemptOutcome",
    "AuthMethod",
    "ClusterMigrationType",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DrainPhase",
    "DrainVMPhase",
    "Endpoint",
    "FlapGuardSpec",
    "HandshakePacingSpec",
    "InventorySpec",
    "LocalDisksPolicy",
    "MigrationPhase",
    "MigrationPolicySpec",
    "MigrationType",
    "NodeDrainSpec",
    "NodeMaintenanceSpec",
    "PlacementPolicy",
    "PlacementSettings",
    "ProxmoxClusterSpec",
    "Resource",
    "RetrySpec",
    "SecretRef",
    "SpecError",
    "StoppedVMsPolicy",
    "TLSSpec",
    "TemplatesPolicy",
    "TransportRefusal",
    "VMMigrationSpec",
    "VMPlacementSpec",
    "find_condition",
    "format_duration",
    "is_condition_true",
    "parse_rfc3339",
    "set_condition",
    "to_rfc3339",
]
