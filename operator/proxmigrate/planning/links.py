"""What each target can take in: its weight in a drain's byte budget (pure).

A target receives at most its link's speed, so a plan that gives a 5 Gbit/s target as many
bytes as a 10 Gbit/s one makes the slow link the drain's tail whatever the engine does
(bench/RESULTS.md, "Issue 13, sixth pass"). Link speeds come from what is declared
(ProxmoxCluster `migrationPolicy.nodeLinks`, docs/policy.md; the bench's and `proxmigrate
simulate`'s cluster model): nothing is measured here, and a cluster without declared links
plans with even shares, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def ingress_weights(
    source: str, targets: Sequence[str], link_gbps: Mapping[str, float]
) -> dict[str, float]:
    """Each target's share weight: its declared link speed, capped by the source's (a stream
    is no faster than either end); an undeclared target weighs the mean of the declared ones
    (an average node), so with none declared every target weighs 1: an even share."""
    cap = link_gbps.get(source, float("inf"))
    declared = {name: min(link_gbps[name], cap) for name in targets if name in link_gbps}
    if not declared:
        return dict.fromkeys(targets, 1.0)
    mean = sum(declared.values()) / len(declared)
    return {name: declared.get(name, mean) for name in targets}
