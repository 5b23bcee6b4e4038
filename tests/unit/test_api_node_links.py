"""`spec.migrationPolicy.nodeLinks` and `convergenceMargin` reach the engine."""

from __future__ import annotations

import pytest

from proxmigrate.api.cluster import MigrationPolicySpec
from proxmigrate.api.fields import SpecError
from proxmigrate.engine import link_payload


def test_declared_links_reach_the_engine() -> None:
    spec = MigrationPolicySpec.from_spec(
        {"nodeLinks": [{"node": "pve1", "gbps": 1}, {"node": "pve2", "gbps": 25.0}]}
    )
    assert spec.node_links_gbps == (("pve1", 1.0), ("pve2", 25.0))
    policy = spec.to_engine_policy()
    assert policy.declared_link("pve1") == pytest.approx(117.5e6)
    assert policy.declared_link("pve2") == link_payload(25.0)
    assert policy.declared_link("pve3") is None
    assert MigrationPolicySpec.from_spec({}).to_engine_policy().node_link_capacity == ()


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ([{"node": "pve1", "gbps": 1}, {"node": "pve1", "gbps": 10}], "nodeLinks[1]: node pve1"),
        ([{"node": "pve1", "gbps": 0}], "nodeLinks[0].gbps: expected a speed above 0"),
        ([{"node": "pve1"}], "nodeLinks[0].gbps is required"),
        ([{"node": "pve1", "gbps": "fast"}], "nodeLinks[0].gbps: expected a number"),
        ({"pve1": 1}, "nodeLinks: expected a list of dict"),
    ],
)
def test_bad_links_are_one_line_errors(links: object, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MigrationPolicySpec.from_spec({"nodeLinks": links})


def test_convergence_margin_is_off_at_0_and_at_least_1_otherwise() -> None:
    assert MigrationPolicySpec.from_spec({}).to_engine_policy().convergence_margin == 2.0
    off = MigrationPolicySpec.from_spec({"convergenceMargin": 0})
    assert off.to_engine_policy().convergence_margin is None
    three = MigrationPolicySpec.from_spec({"convergenceMargin": 3})
    assert three.to_engine_policy().convergence_margin == 3.0
    with pytest.raises(SpecError, match=r"convergenceMargin: expected 0 \(off\) or 1 to 100"):
        MigrationPolicySpec.from_spec({"convergenceMargin": 0.5})
