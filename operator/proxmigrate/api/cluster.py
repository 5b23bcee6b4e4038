"""`ProxmoxCluster.spec` as typed values, defaults applied as in crds/proxmoxclusters.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from proxmigrate.api.enums import ClusterMigrationType, MigrationType
from proxmigrate.api.fields import SpecError, SpecReader
from proxmigrate.api.refs import SecretRef
from proxmigrate.endpoint import Endpoint
from proxmigrate.engine.policy import EnginePolicy, MaxStartups, RetryPolicy, link_payload
from proxmigrate.planning.capacity import MemoryReserve
from proxmigrate.planning.selection import DEFAULT_ANTI_AFFINITY_PREFIX

GIB = 1024**3


def _endpoint(text: str) -> Endpoint:
    try:
        return Endpoint.parse(text)
    except ValueError as error:
        raise SpecError(f"spec.endpoints: {error}") from None


@dataclass(frozen=True)
class TLSSpec:
    insecure_skip_verify: bool = False
    ca_bundle: str | None = None  # PEM
    ca_secret_ref: SecretRef | None = None
    ca_secret_key: str = "ca.crt"

    @classmethod
    def read(cls, reader: SpecReader) -> TLSSpec:
        secret = reader.child("caSecretRef")
        tls = cls(
            insecure_skip_verify=reader.get("insecureSkipVerify", bool, False),
            ca_bundle=reader.get("caBundle", str, None),
            ca_secret_ref=SecretRef.read(secret) if reader.has("caSecretRef") else None,
            ca_secret_key=secret.get("key", str, "ca.crt"),
        )
        if tls.insecure_skip_verify and (tls.ca_bundle or tls.ca_secret_ref):
            raise SpecError(
                f"{reader.path}: insecureSkipVerify turns verification off, so a CA bundle "
                "would be ignored; set one or the other"
            )
        return tls


@dataclass(frozen=True)
class InventorySpec:
    sync_interval_seconds: int = 15

    @classmethod
    def read(cls, reader: SpecReader) -> InventorySpec:
        return cls(reader.get("syncIntervalSeconds", int, 15))


@dataclass(frozen=True)
class PlacementSettings:
    """Cluster-wide planner rules (spec.placement)."""

    memory_reserve_percent: int = 10
    memory_reserve_minimum_bytes: int = 2 * GIB
    anti_affinity_tag_prefix: str = DEFAULT_ANTI_AFFINITY_PREFIX

    @classmethod
    def read(cls, reader: SpecReader) -> PlacementSettings:
        return cls(
            memory_reserve_percent=reader.get("memoryReservePercent", int, 10),
            memory_reserve_minimum_bytes=reader.quantity("memoryReserveMinimum", 2 * GIB) or 0,
            anti_affinity_tag_prefix=reader.get(
                "antiAffinityTagPrefix", str, DEFAULT_ANTI_AFFINITY_PREFIX
            ),
        )

    def memory_reserve(
        self, percent: int | None = None, minimum_bytes: int | None = None
    ) -> MemoryReserve:
        """The planner's reserve; a NodeDrain passes its overrides, None keeps the cluster's."""
        return MemoryReserve(
            min_bytes=self.memory_reserve_minimum_bytes if minimum_bytes is None else minimum_bytes,
            ratio=(self.memory_reserve_percent if percent is None else percent) / 100,
        )


@dataclass(frozen=True)
class HandshakePacingSpec:
    safety_fraction: float = 0.5
    handshake_seconds: float = 0.25
    start_spread_seconds: float = 5.0
    end_spread_seconds: float = 2.0

    @classmethod
    def read(cls, reader: SpecReader) -> HandshakePacingSpec:
        return cls(
            safety_fraction=reader.get("safetyFraction", float, 0.5),
            handshake_seconds=reader.get("handshakeSeconds", float, 0.25),
            start_spread_seconds=reader.get("startSpreadSeconds", float, 5.0),
            end_spread_seconds=reader.get("endSpreadSeconds", float, 2.0),
        )


@dataclass(frozen=True)
class RetrySpec:
    max_attempts: int = 5  # the first attempt included
    backoff_seconds: int = 5
    max_backoff_seconds: int = 300

    @classmethod
    def read(cls, reader: SpecReader) -> RetrySpec:
        return cls(
            max_attempts=reader.get("maxAttempts", int, 5),
            backoff_seconds=reader.get("backoffSeconds", int, 5),
            max_backoff_seconds=reader.get("maxBackoffSeconds", int, 300),
        )


class TransportRefusal(NamedTuple):
    """Why migrations must not run on a cluster: a condition reason and message."""

    reason: str
    message: str


def _convergence_margin(reader: SpecReader) -> float:
    margin = reader.get("convergenceMargin", float, 2.0)
    if margin != 0 and not 1 <= margin <= 100:
        raise SpecError(
            f"{reader.path}.convergenceMargin: expected 0 (off) or 1 to 100, got {margin}"
        )
    return margin


def _node_links(reader: SpecReader) -> tuple[tuple[str, float], ...]:
    """`nodeLinks` as (node, Gbit/s) pairs: each node once, each speed above 0."""
    links: dict[str, float] = {}
    for index, item in enumerate(reader.list_of("nodeLinks", dict)):
        entry = SpecReader(item, f"{reader.path}.nodeLinks[{index}]")
        node, gbps = entry.get("node", str), entry.get("gbps", float)
        if node in links:
            raise SpecError(f"{entry.path}: node {node} is listed twice")
        if gbps <= 0:
            raise SpecError(f"{entry.path}.gbps: expected a speed above 0, got {gbps}")
        links[node] = gbps
    return tuple(links.items())


@dataclass(frozen=True)
class MigrationPolicySpec:
    type: MigrationType = MigrationType.SECURE
    allow_insecure: bool = False
    max_parallel: int = 8
    max_parallel_per_target: int | None = None
    max_parallel_per_source: int | None = None
    target_ssh_max_startups: MaxStartups = field(default_factory=MaxStartups)
    handshake_pacing: HandshakePacingSpec = field(default_factory=HandshakePacingSpec)
    bandwidth_limit_kib: int | None = None  # PVE `bwlimit`, KiB/s
    min_stream_rate_mib: int = 128  # 0: no stream-rate floor
    convergence_margin: float = 2.0  # 0: no convergence rule
    node_links_gbps: tuple[tuple[str, float], ...] = ()  # declared link speeds, by node
    retry: RetrySpec = field(default_factory=RetrySpec)
    task_timeout_seconds: int = 14400

    @classmethod
    def from_spec(
        cls, data: Mapping[str, Any] | None, path: str = "spec.migrationPolicy"
    ) -> MigrationPolicySpec:
        return cls.read(SpecReader(data, path))

    @classmethod
    def read(cls, reader: SpecReader) -> MigrationPolicySpec:
        startups = reader.get("targetSshMaxStartups", str, "10:30:100")
        try:
            max_startups = MaxStartups.parse(startups)
        except ValueError as error:
            raise SpecError(f"{reader.path}.targetSshMaxStartups: {error}") from None
        return cls(
            type=reader.get("type", MigrationType, MigrationType.SECURE),
            allow_insecure=reader.get("allowInsecure", bool, False),
            max_parallel=reader.get("maxParallel", int, 8),
            max_parallel_per_target=reader.get("maxParallelPerTarget", int, None),
            max_parallel_per_source=reader.get("maxParallelPerSource", int, None),
            target_ssh_max_startups=max_startups,
            handshake_pacing=HandshakePacingSpec.read(reader.child("handshakePacing")),
            bandwidth_limit_kib=reader.get("bandwidthLimit", int, None),
            min_stream_rate_mib=reader.get("minStreamRateMiBps", int, 128),
            convergence_margin=_convergence_margin(reader),
            node_links_gbps=_node_links(reader),
            retry=RetrySpec.read(reader.child("retry")),
            task_timeout_seconds=reader.get("taskTimeoutSeconds", int, 14400),
        )

    def to_engine_policy(self) -> EnginePolicy:
        """The engine's settings; what the spec does not expose keeps the engine's defaults."""
        pacing = self.handshake_pacing
        try:
            return EnginePolicy(
                max_parallel=self.max_parallel,
                max_parallel_per_target=self.max_parallel_per_target,
                max_parallel_per_source=self.max_parallel_per_source,
                ssh_max_startups=self.target_ssh_max_startups,
                handshake_safety=pacing.safety_fraction,
                handshake_seconds=pacing.handshake_seconds,
                start_spread_seconds=pacing.start_spread_seconds,
                end_spread_seconds=pacing.end_spread_seconds,
                min_stream_rate=self.min_stream_rate_mib * 2**20 or None,
                convergence_margin=self.convergence_margin or None,
                node_link_capacity=tuple(
                    (node, link_payload(gbps)) for node, gbps in self.node_links_gbps
                ),
                retry=RetryPolicy(
                    max_attempts=self.retry.max_attempts,
                    backoff_base=float(self.retry.backoff_seconds),
                    backoff_max=float(self.retry.max_backoff_seconds),
                ),
            )
        except ValueError as error:
            raise SpecError(f"spec.migrationPolicy: {error}") from None

    def needs_datacenter_setting(self, *, may_choose: bool) -> bool:
        """Whether the datacenter's migration setting decides `transport_refusal`: not when
        the request picks the transport (`may_choose`) or either transport is accepted."""
        return not (may_choose or self.allow_insecure)

    def transport_refusal(
        self, datacenter: ClusterMigrationType, *, may_choose: bool = False, hidden: bool = False
    ) -> TransportRefusal | None:
        """Why migrating now would break the transport policy, or None when it may proceed.

        `may_choose`: the operator logs in with a `root@pam` ticket and so sends
        `migration_type` itself. PVE refuses that option from every other user and from API
        tokens, whose user is the token id (qemu-server `API2/Qemu.pm` migrate_vm: "Only root
        may use this option"; pve-manager `PVE/HTTPServer.pm` auth_handler); for them the
        datacenter's `migration` setting decides (pve-guest-common `PVE/AbstractMigrate.pm`
        migrate), so it must be known and accepted. `hidden`: `GET /cluster/options` left
        it out because the operator lacks `Sys.Audit` on `/`.
        """
        if self.type is MigrationType.INSECURE and not self.allow_insecure:
            return TransportRefusal(
                "InsecureNotAllowed",
                "migrationPolicy.type is insecure but migrationPolicy.allowInsecure is false; "
                "set allowInsecure: true to accept clear-text migrations, or use type: secure",
            )
        if not self.needs_datacenter_setting(may_choose=may_choose):
            return None
        if hidden:
            return TransportRefusal(
                "SysAuditMissing",
                "GET /cluster/options answered without the datacenter migration setting: the "
                "operator's API token or user lacks Sys.Audit on / (see docs/token.md), so the "
                "transport PVE would use is unknown; grant Sys.Audit on / to migrate",
            )
        if datacenter is ClusterMigrationType.UNKNOWN:
            return TransportRefusal(
                "ClusterMigrationUnknown",
                "the datacenter migration setting (GET /cluster/options) could not be read yet",
            )
        if datacenter is ClusterMigrationType.INSECURE:
            return TransportRefusal(
                "ClusterMigrationInsecure",
                "the datacenter migration setting is type=insecure and only a root@pam ticket "
                "may choose another transport per migration; set migration: type=secure in "
                "Datacenter > Options, or allowInsecure: true to accept clear-text migrations",
            )
        return None


@dataclass(frozen=True)
class ProxmoxClusterSpec:
    endpoints: tuple[Endpoint, ...]
    credentials_secret_ref: SecretRef
    tls: TLSSpec = field(default_factory=TLSSpec)
    inventory: InventorySpec = field(default_factory=InventorySpec)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    migration_policy: MigrationPolicySpec = field(default_factory=MigrationPolicySpec)

    @classmethod
    def from_spec(cls, data: Mapping[str, Any] | None, path: str = "spec") -> ProxmoxClusterSpec:
        reader = SpecReader(data, path)
        endpoints = reader.list_of("endpoints", str)
        if not endpoints:
            raise SpecError(f"{path}.endpoints needs at least one host[:port]")
        return cls(
            endpoints=tuple(_endpoint(endpoint) for endpoint in endpoints),
            credentials_secret_ref=SecretRef.read(reader.child("credentialsSecretRef")),
            tls=TLSSpec.read(reader.child("tls")),
            inventory=InventorySpec.read(reader.child("inventory")),
            placement=PlacementSettings.read(reader.child("placement")),
            migration_policy=MigrationPolicySpec.read(reader.child("migrationPolicy")),
        )
