"""Structural checks of crds/*.yaml, and that the Python API mirrors them (names, enums, defaults).

The API server itself checks the CEL rules (tests/e2e/test_crds_apiserver.py); here we check
what it does not: every field is documented, printer columns point at real fields, the
claimed rules exist, and crds/ and proxmigrate.api agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxmigrate import api
from proxmigrate.api import enums

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
Schema = dict[str, Any]


def load_crd(resource: api.Resource) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((CRD_DIR / f"{resource.plural}.yaml").read_text())
    return document


def version(resource: api.Resource) -> dict[str, Any]:
    (only,) = load_crd(resource)["spec"]["versions"]
    assert isinstance(only, dict)
    return only


def root_schema(resource: api.Resource) -> Schema:
    schema: Schema = version(resource)["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node under `schema` with its path (`.spec.a.b`, `[]` for list items)."""
    for name, child in schema.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield f"{path}[]", schema["items"]
        yield from walk(schema["items"], f"{path}[]")


def node_at(resource: api.Resource, path: str) -> Schema:
    """The schema node at a dotted path such as `spec.migrationPolicy.retry`."""
    node = root_schema(resource)
    for part in path.split("."):
        node = node["properties"][part]
    return node


RESOURCES = pytest.mark.parametrize("resource", api.RESOURCES, ids=lambda r: r.kind)


@RESOURCES
def test_names_scope_and_subresources(resource: api.Resource) -> None:
    crd = load_crd(resource)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == resource.crd_name
    spec = crd["spec"]
    assert spec["group"] == api.GROUP
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        resource.kind,
        resource.plural,
        resource.singular,
    )
    assert names["shortNames"] == [resource.short_name]
    assert names["categories"] == ["proxmigrate"]
    served = version(resource)
    assert served["name"] == api.VERSION
    assert served["served"] and served["storage"]
    assert served["subresources"] == {"status": {}}


@RESOURCES
def test_every_field_is_described(resource: api.Resource) -> None:
    """`kubectl explain` shows these; an undocumented field teaches nothing."""
    missing = [
        path
        for path, node in walk(root_schema(resource))
        if path != ".metadata" and not node.get("description", "").strip()
    ]
    assert not missing, f"fields without description: {missing}"
    assert root_schema(resource)["description"]


@RESOURCES
def test_schema_is_structural_and_bounded(resource: api.Resource) -> None:
    """Structural (a type everywhere, items for lists) and bounded, so CEL costs stay estimable."""
    problems = []
    for path, node in walk(root_schema(resource)):
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if "type" not in node and not int_or_string:
            problems.append(f"{path}: no type")
        if (
            node.get("type") == "object"
            and path != ".metadata"
            and not node.get("properties")
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            problems.append(f"{path}: object without properties")
        if node.get("type") == "array":
            if "items" not in node or "maxItems" not in node:
                problems.append(f"{path}: list without items or maxItems")
            if "x-kubernetes-list-type" not in node:
                problems.append(f"{path}: list without x-kubernetes-list-type")
        if (
            node.get("type") == "string"
            and path not in {".apiVersion", ".kind"}
            and not ({"maxLength", "enum", "format"} & node.keys())
        ):
            problems.append(f"{path}: string without maxLength")
    assert not problems


@RESOURCES
def test_map_lists_key_on_required_fields(resource: api.Resource) -> None:
    for path, node in walk(root_schema(resource)):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"]["required"]), path


@RESOURCES
def test_status_has_conditions_generation_and_kopf(resource: api.Resource) -> None:
    status = node_at(resource, "status")["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    assert status["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "observedGeneration",
        "lastTransitionTime",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


REQUIRED_STATUS_FIELDS = {
    api.PROXMOX_CLUSTER: [
        "pveVersion",
        "nodes",
        "nodeCount",
        "nodesOnline",
        "vmCount",
        "lastSyncTime",
        "clusterMigrationType",
        "authMethod",
    ],
    api.VM_MIGRATION: [
        "phase",
        "upid",
        "sourceNode",
        "attempts",
        "attemptCount",
        "startTime",
        "completionTime",
        "durationSeconds",
        "startRequestedTime",
        "reason",
    ],
    api.NODE_DRAIN: [
        "phase",
        "total",
        "migrated",
        "failed",
        "remaining",
        "skipped",
        "progress",
        "vms",
        "plan",
        "startTime",
        "completionTime",
        "estimatedSecondsRemaining",
        "eta",
    ],
    api.VM_PLACEMENT: ["vm", "desiredNode", "currentNode", "inSync", "lastMigration", "vms"],
    api.NODE_MAINTENANCE: ["phase", "nodes", "plan", "step", "currentNodes", "stepPhase", "done"],
}


@RESOURCES
def test_status_lists_what_the_issues_ask_for(resource: api.Resource) -> None:
    status = node_at(resource, "status")["properties"]
    assert not [name for name in REQUIRED_STATUS_FIELDS[resource] if name not in status]


def test_migration_attempts_record_the_classified_failure() -> None:
    attempt = node_at(api.VM_MIGRATION, "status.attempts")["items"]["properties"]
    for name in ("startTime", "endTime", "upid", "outcome", "reason", "transient", "phase"):
        assert name in attempt
    assert "decisiveLine" in attempt


def test_drain_entries_carry_the_plan() -> None:
    entry = node_at(api.NODE_DRAIN, "status.vms")["items"]["properties"]
    for name in ("vmid", "name", "memoryBytes", "from", "to", "order", "phase", "migration"):
        assert name in entry
    plan = node_at(api.NODE_DRAIN, "status.plan")["properties"]
    assert {"entries", "unplaceable", "missingMemoryBytes"} <= plan.keys()


ENUMS: list[tuple[api.Resource, str, type[StrEnum]]] = [
    (api.VM_MIGRATION, "status.phase", enums.MigrationPhase),
    (api.VM_PLACEMENT, "status.lastMigration.phase", enums.MigrationPhase),
    (api.NODE_DRAIN, "status.phase", enums.DrainPhase),
    (api.NODE_DRAIN, "spec.stoppedVMs", enums.StoppedVMsPolicy),
    (api.NODE_DRAIN, "spec.templates", enums.TemplatesPolicy),
    (api.NODE_DRAIN, "spec.localDisks", enums.LocalDisksPolicy),
    (api.VM_PLACEMENT, "spec.policy", enums.PlacementPolicy),
    (api.PROXMOX_CLUSTER, "spec.migrationPolicy.type", enums.MigrationType),
    (api.PROXMOX_CLUSTER, "status.clusterMigrationType", enums.ClusterMigrationType),
    (api.PROXMOX_CLUSTER, "status.authMethod", enums.AuthMethod),
    (api.NODE_MAINTENANCE, "status.phase", enums.MaintenancePhase),
    (api.NODE_MAINTENANCE, "spec.onFailure", enums.FailurePolicy),
    (api.NODE_MAINTENANCE, "spec.done.signal", enums.DoneSignal),
]


@pytest.mark.parametrize(
    ("resource", "path", "enum_type"), ENUMS, ids=[f"{r.kind}.{p}" for r, p, _ in ENUMS]
)
def test_enums_match_python(resource: api.Resource, path: str, enum_type: type[StrEnum]) -> None:
    assert node_at(resource, path)["enum"] == [member.value for member in enum_type]


def test_list_item_enums_match_python() -> None:
    attempt = node_at(api.VM_MIGRATION, "status.attempts")["items"]["properties"]
    assert attempt["outcome"]["enum"] == [m.value for m in enums.AttemptOutcome]
    entry = node_at(api.NODE_DRAIN, "status.vms")["items"]["properties"]
    assert entry["phase"]["enum"] == [m.value for m in enums.DrainVMPhase]
    assert entry["returnPhase"]["enum"] == [m.value for m in enums.DrainReturnPhase]


def resolve_json_path(schema: Schema, json_path: str) -> Schema | None:
    """The schema node a printer column's JSONPath reads, or None if it names nothing."""
    node: Schema | None = schema
    for part in re.findall(r"\.([A-Za-z0-9_]+)(\[\?\(@\.[A-Za-z]+==\"[^\"]*\"\)\])?", json_path):
        name, filtered = part
        if node is None or name not in node.get("properties", {}):
            return None
        node = node["properties"][name]
        if filtered:
            node = node.get("items")
    return node


COLUMN_TYPES = {"integer": {"integer"}, "number": {"number"}, "boolean": {"boolean"}}


@RESOURCES
def test_printer_columns_read_existing_fields(resource: api.Resource) -> None:
    schema = root_schema(resource)
    for column in version(resource)["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        assert re.fullmatch(r"(\.[A-Za-z0-9_]+(\[\?\(@\.[a-z]+==\"[A-Za-z]+\"\)\])?)+", path), path
        node = resolve_json_path(schema, path)
        assert node is not None, f"{column['name']}: {path} is not in the schema"
        assert column["type"] in {"string", "integer", "number", "boolean", "date"}
        assert node.get("type") in COLUMN_TYPES.get(column["type"], {"string"}), column["name"]


EXPECTED_COLUMNS = {
    api.PROXMOX_CLUSTER: (["READY", "VERSION", "NODES", "VMS", "AGE"], []),
    api.VM_MIGRATION: (
        ["VMID", "SOURCE", "TARGET", "PHASE", "ATTEMPTS", "AGE"],
        ["UPID", "REASON"],
    ),
    api.NODE_DRAIN: (
        ["NODE", "PHASE", "MIGRATED", "REMAINING", "FAILED", "AGE"],
        ["PROGRESS", "ETA", "RETURNED"],
    ),
    api.VM_PLACEMENT: (["VM", "DESIRED", "CURRENT", "SYNCED", "AGE"], ["POLICY"]),
    api.NODE_MAINTENANCE: (
        ["PHASE", "NODE", "STEP", "DONE", "TOTAL", "AGE"],
        ["MIGRATED", "PARKED"],
    ),
}


@RESOURCES
def test_printer_columns_default_and_wide(resource: api.Resource) -> None:
    columns = version(resource)["additionalPrinterColumns"]
    default = [c["name"].upper() for c in columns if c.get("priority", 0) == 0]
    wide = [c["name"].upper() for c in columns if c.get("priority", 0) == 1]
    expected_default, expected_wide = EXPECTED_COLUMNS[resource]
    assert default == expected_default
    assert set(expected_wide) <= set(wide)


def test_ready_column_filters_the_ready_condition() -> None:
    (ready,) = [
        c for c in version(api.PROXMOX_CLUSTER)["additionalPrinterColumns"] if c["name"] == "Ready"
    ]
    assert ready["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


CEL_RULES: list[tuple[api.Resource, str, str]] = [
    (api.PROXMOX_CLUSTER, "spec.migrationPolicy", "self.maxParallelPerTarget <= self.maxParallel"),
    (api.PROXMOX_CLUSTER, "spec.migrationPolicy", "self.maxParallelPerSource <= self.maxParallel"),
    (api.PROXMOX_CLUSTER, "spec.migrationPolicy.retry", "backoffSeconds <= self.maxBackoffSeconds"),
    (api.PROXMOX_CLUSTER, "spec.migrationPolicy.targetSshMaxStartups", "self.split(':')"),
    (api.PROXMOX_CLUSTER, "spec.tls", "has(self.caBundle) && has(self.caSecretRef)"),
    (api.VM_MIGRATION, "spec", "self == oldSelf"),
    (api.VM_MIGRATION, "spec", "self.source != self.target"),
    (api.NODE_DRAIN, "spec.nodeName", "self == oldSelf"),
    (api.NODE_DRAIN, "spec", "self.nodeName in self.targets"),
    (api.NODE_DRAIN, "spec", "self.maintenanceDone) || (has(self.returnGuests)"),
    (api.NODE_DRAIN, "spec", "!(has(self.dryRun) && self.dryRun)"),
    (api.NODE_DRAIN, "spec.maintenanceDone", "!oldSelf || self"),
    (api.VM_PLACEMENT, "spec", "[has(self.vmid), has(self.name), has(self.selector)]"),
    (api.VM_PLACEMENT, "spec", "has(self.node) != has(self.nodes)"),
    (api.VM_PLACEMENT, "spec.selector", "has(self.tags) || has(self.pool)"),
]


@pytest.mark.parametrize(
    ("resource", "path", "fragment"), CEL_RULES, ids=[f"{r.kind}.{p}" for r, p, _ in CEL_RULES]
)
def test_cel_rules_exist_with_messages(resource: api.Resource, path: str, fragment: str) -> None:
    rules = node_at(resource, path).get("x-kubernetes-validations", [])
    matching = [rule for rule in rules if fragment in rule["rule"]]
    assert matching, f"no rule containing {fragment!r} on {path}"
    assert all(rule["message"] for rule in matching)


def test_insecure_transport_is_not_rejected_by_cel() -> None:
    """Issue 4: insecure without allowInsecure is a False Ready condition, not a rejection."""
    policy = node_at(api.PROXMOX_CLUSTER, "spec.migrationPolicy")
    assert not [r for r in policy.get("x-kubernetes-validations", []) if "Insecure" in r["rule"]]


PATTERNS = {
    "node": (
        node_at(api.VM_MIGRATION, "spec.target")["pattern"],
        ["pve1", "PVE-node-2", "a"],
        ["-pve", "pve-", "pve_1", "pve.example.com", ""],
    ),
    "endpoint": (
        node_at(api.PROXMOX_CLUSTER, "spec.endpoints")["items"]["pattern"],
        ["pve1", "pve1:8006", "10.0.0.1:8006", "pve1.example.com", "[fd00::1]:8006", "[::1]"],
        ["https://pve1", "pve1:", "pve1:port", "fd00::1", "pve 1", ""],
    ),
    "maxStartups": (
        node_at(api.PROXMOX_CLUSTER, "spec.migrationPolicy.targetSshMaxStartups")["pattern"],
        ["10:30:100", "10", "100:1:200"],
        ["10:30", "10:30:100:1", "a", ""],
    ),
    "tag": (
        node_at(api.NODE_DRAIN, "spec.vmSelector.tags")["items"]["pattern"],
        ["web", "anti-affinity_db", "a+b.c", "_x"],
        ["anti-affinity:db", "-web", "a b", ""],
    ),
}


@pytest.mark.parametrize("name", PATTERNS)
def test_patterns_accept_and_reject(name: str) -> None:
    pattern, good, bad = PATTERNS[name]
    assert [value for value in good if not re.search(pattern, value)] == []
    assert [value for value in bad if re.search(pattern, value)] == []


def apply_defaults(schema: Schema, value: Any) -> Any:
    """What the API server stores: defaults filled in wherever the parent object exists."""
    if isinstance(value, dict) and "properties" in schema:
        filled = dict(value)
        for name, child in schema["properties"].items():
            if name not in filled and "default" in child:
                filled[name] = child["default"]
            if name in filled:
                filled[name] = apply_defaults(child, filled[name])
        return filled
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


MINIMAL_SPECS: list[tuple[api.Resource, dict[str, Any], Any]] = [
    (
        api.PROXMOX_CLUSTER,
        {"endpoints": ["pve1"], "credentialsSecretRef": {"name": "pve"}},
        api.ProxmoxClusterSpec,
    ),
    (
        api.VM_MIGRATION,
        {"clusterRef": {"name": "lab"}, "vmid": 120, "target": "pve2"},
        api.VMMigrationSpec,
    ),
    (api.NODE_DRAIN, {"clusterRef": {"name": "lab"}, "nodeName": "pve1"}, api.NodeDrainSpec),
    (
        api.VM_PLACEMENT,
        {"clusterRef": {"name": "lab"}, "vmid": 120, "node": "pve2"},
        api.VMPlacementSpec,
    ),
    (
        api.NODE_MAINTENANCE,
        {"clusterRef": {"name": "lab"}, "nodes": ["pve1", "pve2"]},
        api.NodeMaintenanceSpec,
    ),
]


@pytest.mark.parametrize(
    ("resource", "spec", "spec_type"), MINIMAL_SPECS, ids=[r.kind for r, _, _ in MINIMAL_SPECS]
)
def test_python_defaults_equal_crd_defaults(
    resource: api.Resource, spec: dict[str, Any], spec_type: Any
) -> None:
    defaulted = apply_defaults(node_at(resource, "spec"), spec)
    assert defaulted != spec  # the CRD has defaults for this kind
    assert spec_type.from_spec(defaulted) == spec_type.from_spec(spec)


def test_defaults_fill_nested_policy_objects() -> None:
    """`default: {}` on nested objects lets their own defaults apply when the user omits them."""
    schema = node_at(api.PROXMOX_CLUSTER, "spec")
    defaulted = apply_defaults(schema, {"endpoints": ["pve1"]})
    policy = defaulted["migrationPolicy"]
    assert policy["maxParallel"] == 8
    assert policy["targetSshMaxStartups"] == "10:30:100"
    assert policy["retry"] == {"maxAttempts": 5, "backoffSeconds": 5, "maxBackoffSeconds": 300}
    assert policy["handshakePacing"]["safetyFraction"] == 0.5
