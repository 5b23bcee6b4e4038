"""proxmigrate.api: conditions, timestamps and the typed spec readers."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from proxmigrate import api
from proxmigrate.engine.policy import MaxStartups
from proxmigrate.planning.capacity import MemoryReserve

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
GIB = 1024**3


class TestSetCondition:
    def test_new_condition_is_appended_with_all_fields(self) -> None:
        existing = [{"type": "Degraded", "status": "False", "reason": "Fine", "message": ""}]
        result = api.set_condition(existing, "Ready", True, "Connected", "API answers", 3, T0)
        assert result[0] == existing[0]
        assert result[1] == {
            "type": "Ready",
            "status": "True",
            "reason": "Connected",
            "message": "API answers",
            "observedGeneration": 3,
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }

    def test_same_status_keeps_transition_time_but_takes_new_details(self) -> None:
        first = api.set_condition([], "Ready", False, "Unreachable", "pve1 timed out", 1, T0)
        second = api.set_condition(first, "Ready", "False", "BadToken", "401 from pve1", 2, T1)
        assert second == [
            {
                "type": "Ready",
                "status": "False",
                "reason": "BadToken",
                "message": "401 from pve1",
                "observedGeneration": 2,
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ]

    def test_status_change_moves_transition_time(self) -> None:
        first = api.set_condition([], "Ready", None, "Pending", "first reconcile", 1, T0)
        assert first[0]["status"] == "Unknown"
        second = api.set_condition(first, "Ready", True, "Connected", "ok", 1, T1)
        assert second[0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"

    def test_input_is_not_mutated_and_order_is_kept(self) -> None:
        conditions = api.set_condition([], "Ready", True, "A", "", 1, T0)
        conditions = api.set_condition(conditions, "Degraded", False, "B", "", 1, T0)
        snapshot = [dict(c) for c in conditions]
        updated = api.set_condition(conditions, "Ready", False, "C", "", 1, T1)
        assert conditions == snapshot
        assert [c["type"] for c in updated] == ["Ready", "Degraded"]

    def test_missing_generation_is_left_out(self) -> None:
        (condition,) = api.set_condition(None, "Ready", True, "Ok", "", None, T0)
        assert "observedGeneration" not in condition

    @pytest.mark.parametrize("reason", ["", "bad reason", "9Lives", "trailing,"])
    def test_reason_must_be_what_the_api_server_accepts(self, reason: str) -> None:
        with pytest.raises(ValueError, match="CamelCase"):
            api.set_condition([], "Ready", True, reason, "", 1, T0)

    def test_status_text_is_validated(self) -> None:
        with pytest.raises(ValueError):
            api.set_condition([], "Ready", "yes", "Ok", "", 1, T0)

    def test_find_and_is_true(self) -> None:
        conditions = api.set_condition([], "Ready", True, "Ok", "", 1, T0)
        conditions = api.set_condition(conditions, "Degraded", False, "Ok", "", 1, T0)
        assert api.find_condition(conditions, api.ConditionType.DEGRADED) == conditions[1]
        assert api.find_condition(conditions, "Blocked") is None
        assert api.is_condition_true(conditions, api.ConditionType.READY)
        assert not api.is_condition_true(conditions, "Degraded")
        assert not api.is_condition_true(None, "Ready")


class TestTimestamps:
    def test_round_trip_in_utc(self) -> None:
        plus_two = datetime.timezone(datetime.timedelta(hours=2))
        local = datetime.datetime(2026, 1, 2, 5, 4, 5, tzinfo=plus_two)
        assert api.to_rfc3339(local) == "2026-01-02T03:04:05Z"
        assert api.parse_rfc3339("2026-01-02T03:04:05Z") == T0

    def test_naive_times_count_as_utc(self) -> None:
        assert api.to_rfc3339(datetime.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0s"),
            (44.6, "45s"),
            (270, "4m30s"),
            (300, "5m"),
            (7500, "2h5m"),
            (7200, "2h"),
            (273600, "3d4h"),
            (86400, "1d"),
            (-5, "0s"),
        ],
    )
    def test_format_duration(self, seconds: float, text: str) -> None:
        assert api.format_duration(seconds) == text


CLUSTER: dict[str, Any] = {
    "endpoints": ["pve1", "10.0.0.2:8443", "[fd00::3]"],
    "credentialsSecretRef": {"name": "pve-token", "namespace": "infra"},
}


class TestProxmoxClusterSpec:
    def test_minimal_spec_gets_the_documented_defaults(self) -> None:
        spec = api.ProxmoxClusterSpec.from_spec(CLUSTER)
        assert [str(e) for e in spec.endpoints] == ["pve1:8006", "10.0.0.2:8443", "[fd00::3]:8006"]
        assert spec.endpoints[2].url == "https://[fd00::3]:8006"
        assert spec.credentials_secret_ref.namespace_or("default") == "infra"
        assert spec.tls == api.TLSSpec(insecure_skip_verify=False)
        policy = spec.migration_policy
        assert policy.type is api.MigrationType.SECURE and not policy.allow_insecure
        assert policy.max_parallel == 8 and policy.max_parallel_per_target is None
        assert policy.target_ssh_max_startups == MaxStartups(10, 30, 100)
        assert policy.retry == api.RetrySpec(5, 5, 300)
        assert spec.inventory.sync_interval_seconds == 15
        assert spec.placement.memory_reserve() == MemoryReserve(min_bytes=2 * GIB, ratio=0.10)

    def test_everything_set(self) -> None:
        spec = api.ProxmoxClusterSpec.from_spec(
            {
                **CLUSTER,
                "tls": {"caSecretRef": {"name": "pve-ca", "key": "pve-root-ca.pem"}},
                "placement": {"memoryReservePercent": 5, "memoryReserveMinimum": "512Mi"},
                "migrationPolicy": {
                    "type": "insecure",
                    "allowInsecure": True,
                    "maxParallel": 32,
                    "maxParallelPerTarget": 6,
                    "maxParallelPerSource": 4,
                    "targetSshMaxStartups": "20",
                    "handshakePacing": {"safetyFraction": 0.3, "handshakeSeconds": 1},
                    "bandwidthLimit": 512000,
                    "retry": {"maxAttempts": 2},
                    "taskTimeoutSeconds": 600,
                },
            }
        )
        assert spec.tls.ca_secret_ref == api.SecretRef("pve-ca")
        assert spec.tls.ca_secret_key == "pve-root-ca.pem"
        assert spec.placement.memory_reserve() == MemoryReserve(512 * 1024**2, 0.05)
        engine = spec.migration_policy.to_engine_policy()
        assert (engine.max_parallel, engine.max_parallel_per_target) == (32, 6)
        assert engine.max_parallel_per_source == 4
        assert engine.ssh_max_startups == MaxStartups(20, 100, 20)
        assert (engine.handshake_safety, engine.handshake_seconds) == (0.3, 1.0)
        assert engine.retry.max_attempts == 2 and engine.retry.backoff_max == 300.0
        assert spec.migration_policy.bandwidth_limit_kib == 512000

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"endpoints": []}, "spec.endpoints needs at least one"),
            ({"endpoints": ["pve1:70000"]}, "outside 1-65535"),
            ({"endpoints": ["https://pve1"]}, "not host or host:port"),
            ({"credentialsSecretRef": None}, "spec.credentialsSecretRef.name is required"),
            ({"migrationPolicy": {"maxParallel": "8"}}, "spec.migrationPolicy.maxParallel"),
            ({"migrationPolicy": {"maxParallel": True}}, "expected an integer"),
            ({"migrationPolicy": {"type": "fast"}}, "one of secure, insecure"),
            ({"migrationPolicy": {"targetSshMaxStartups": "10:30"}}, "targetSshMaxStartups"),
            ({"migrationPolicy": {"retry": []}}, "spec.migrationPolicy.retry: expected an object"),
            ({"placement": {"memoryReserveMinimum": "lots"}}, "a quantity such as 2Gi"),
        ],
    )
    def test_bad_specs_name_the_field(self, change: dict[str, Any], message: str) -> None:
        with pytest.raises(api.SpecError, match=message.replace(".", r"\.")):
            api.ProxmoxClusterSpec.from_spec({**CLUSTER, **change})

    def test_engine_rejections_become_spec_errors(self) -> None:
        policy = api.MigrationPolicySpec.from_spec({"handshakePacing": {"handshakeSeconds": 0}})
        with pytest.raises(api.SpecError, match="handshake_seconds"):
            policy.to_engine_policy()

    def test_integers_are_accepted_where_numbers_are_expected(self) -> None:
        pacing = api.MigrationPolicySpec.from_spec({"handshakePacing": {"startSpreadSeconds": 3}})
        assert pacing.handshake_pacing.start_spread_seconds == 3.0


class TestTransportRefusal:
    @pytest.mark.parametrize(
        ("policy", "may_choose", "datacenter", "hidden", "reason"),
        [
            # an API token, or a ticket of any user but root@pam: the datacenter decides
            ({}, False, "secure", False, None),
            ({}, False, "insecure", False, "ClusterMigrationInsecure"),
            ({}, False, "unknown", False, "ClusterMigrationUnknown"),
            ({}, False, "unknown", True, "SysAuditMissing"),
            ({"allowInsecure": True}, False, "insecure", False, None),
            ({"allowInsecure": True}, False, "unknown", True, None),  # either is accepted
            ({"type": "insecure"}, False, "insecure", False, "InsecureNotAllowed"),
            ({"type": "insecure", "allowInsecure": True}, False, "insecure", False, None),
            # a root@pam ticket sends migration_type itself
            ({}, True, "insecure", False, None),
            ({"type": "insecure"}, True, "secure", False, "InsecureNotAllowed"),
        ],
    )
    def test_refusals(
        self,
        policy: dict[str, Any],
        may_choose: bool,
        datacenter: str,
        hidden: bool,
        reason: str | None,
    ) -> None:
        refusal = api.MigrationPolicySpec.from_spec(policy).transport_refusal(
            api.ClusterMigrationType(datacenter), may_choose=may_choose, hidden=hidden
        )
        assert (refusal.reason if refusal else None) == reason
        if refusal:
            assert "\n" not in refusal.message  # one line in the Ready condition
            assert any(
                hint in refusal.message
                for hint in ("allowInsecure", "could not be read", "Sys.Audit on /")
            )


class TestVMMigrationSpec:
    def test_defaults(self) -> None:
        spec = api.VMMigrationSpec.from_spec(
            {"clusterRef": {"name": "lab"}, "vmid": 120, "target": "pve2"}
        )
        assert spec == api.VMMigrationSpec("lab", 120, "pve2")
        assert spec.online and not spec.with_local_disks and spec.priority == 0

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({"vmid": 120, "target": "pve2"}, r"spec\.clusterRef\.name is required"),
            ({"clusterRef": {"name": "lab"}, "target": "pve2"}, r"spec\.vmid is required"),
            (
                {"clusterRef": {"name": "lab"}, "vmid": 1, "target": "a", "source": "a"},
                "must differ",
            ),
        ],
    )
    def test_bad_specs(self, spec: dict[str, Any], message: str) -> None:
        with pytest.raises(api.SpecError, match=message):
            api.VMMigrationSpec.from_spec(spec)


DRAIN: dict[str, Any] = {"clusterRef": {"name": "lab"}, "nodeName": "pve1"}


class TestNodeDrainSpec:
    def test_defaults(self) -> None:
        spec = api.NodeDrainSpec.from_spec(DRAIN)
        assert spec.targets is None
        assert spec.vm_selector.selects_all
        assert spec.stopped_vms is api.StoppedVMsPolicy.MIGRATE
        assert spec.templates is api.TemplatesPolicy.MIGRATE
        assert spec.local_disks is api.LocalDisksPolicy.SKIP
        assert not spec.dry_run and not spec.allow_partial
        assert spec.effective_max_parallel(8) == 8

    def test_selector_overrides_and_caps(self) -> None:
        spec = api.NodeDrainSpec.from_spec(
            {
                **DRAIN,
                "targets": ["pve2", "pve3"],
                "vmSelector": {"tags": ["web"], "excludeVmids": [101]},
                "maxParallel": 16,
                "memoryReservePercent": 20,
                "memoryReserveMinimum": "4Gi",
                "localDisks": "fail",
            }
        )
        assert spec.targets == ("pve2", "pve3")
        assert spec.vm_selector.tags == frozenset({"web"})
        assert spec.vm_selector.exclude_vmids == frozenset({101})
        assert spec.effective_max_parallel(8) == 8
        assert spec.effective_max_parallel(32) == 16
        cluster = api.PlacementSettings()
        assert spec.memory_reserve(cluster) == MemoryReserve(min_bytes=4 * GIB, ratio=0.20)
        assert api.NodeDrainSpec.from_spec(DRAIN).memory_reserve(cluster) == MemoryReserve()

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"targets": ["pve1"]}, "must not contain"),
            ({"vmSelector": {"vmids": ["120"]}}, r"spec\.vmSelector\.vmids: expected a list"),
            ({"stoppedVMs": "stop"}, "one of migrate, leave"),
        ],
    )
    def test_bad_specs(self, change: dict[str, Any], message: str) -> None:
        with pytest.raises(api.SpecError, match=message):
            api.NodeDrainSpec.from_spec({**DRAIN, **change})


class TestVMPlacementSpec:
    def test_single_node_becomes_a_preference_list(self) -> None:
        spec = api.VMPlacementSpec.from_spec(
            {"clusterRef": {"name": "lab"}, "vmid": 120, "node": "b"}
        )
        assert spec.nodes == ("b",) and spec.vmid == 120 and spec.selector is None
        assert spec.policy is api.PlacementPolicy.ENFORCE
        assert spec.flap_guard == api.FlapGuardSpec(3, 3600)

    def test_selector_and_nodes(self) -> None:
        spec = api.VMPlacementSpec.from_spec(
            {
                "clusterRef": {"name": "lab"},
                "selector": {"tags": ["web"], "pool": "prod"},
                "nodes": ["b", "a"],
                "policy": "report",
            }
        )
        assert spec.nodes == ("b", "a")
        assert spec.selector is not None
        assert (spec.selector.tags, spec.selector.pools) == ({"web"}, {"prod"})
        assert spec.policy is api.PlacementPolicy.REPORT

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({"vmid": 120, "name": "web", "node": "a"}, "exactly one of spec.vmid"),
            ({"node": "a"}, "exactly one of spec.vmid"),
            ({"vmid": 120}, "exactly one of spec.node"),
            ({"vmid": 120, "node": "a", "nodes": ["b"]}, "exactly one of spec.node"),
            ({"selector": {"tags": []}, "node": "a"}, "needs tags or pool"),
        ],
    )
    def test_bad_specs(self, spec: dict[str, Any], message: str) -> None:
        with pytest.raises(api.SpecError, match=message):
            api.VMPlacementSpec.from_spec({"clusterRef": {"name": "lab"}, **spec})

    def test_flap_guard_counts_only_the_window(self) -> None:
        guard = api.FlapGuardSpec(max_migrations=2, window_seconds=100).guard()
        assert guard.allows([], now=1000)
        assert guard.allows([850, 950], now=1000)  # 850 is outside the window
        assert not guard.allows([920, 950], now=1000)


def test_resources_name_their_crds() -> None:
    assert api.API_VERSION == "proxmigrate.dev/v1alpha1"
    assert [r.crd_name for r in api.RESOURCES] == [
        "proxmoxclusters.proxmigrate.dev",
        "vmmigrations.proxmigrate.dev",
        "nodedrains.proxmigrate.dev",
        "vmplacements.proxmigrate.dev",
        "nodemaintenances.proxmigrate.dev",
    ]


def test_final_migration_phases() -> None:
    assert {p for p in api.MigrationPhase if p.is_final} == {"Succeeded", "Failed", "Cancelled"}
