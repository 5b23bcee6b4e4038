"""What each target can take in: its weight in a drain's byte budget (pure).

A target receives at most its link's speed, so a plan that gives a 5 Gbit/s target as many
bytes as a 10 Gbit/s one makes the slow link the drain's tail whatever the engine does
(bench/RESULTS.md, "Issue 13, sixth pass"). Link speeds come from what is declared
(ProxmoxCluster `migrationPolicy.nodeLinks`, docs/policy.md; the bench's and `proxmigrate
simulate`'s cluster model): nothing is measured here, and a cluster without declared links
plans with even shares. Where a fast source feeds slower targets, the targets' links bind:
each target's bytes are then held to its link's share (`link_budgets`), which memory's pull
towards roomier nodes must not override.
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


def link_budgets(
    source: str,
    weights: Mapping[str, float],
    link_gbps: Mapping[str, float],
    placed: float,
    elsewhere: float,
) -> dict[str, float]:
    """Bytes each target may have headed to it (moves in flight included) before its link,
    not the drain's floor, decides when the bytes `placed` so far arrive.

    The floor is the longer of the source sending `placed` at its egress and the targets
    taking those plus the `elsewhere` bytes in flight at their total ingress (in the units
    of `weights`); a target's budget is what its link carries in that time. The planner
    places guests largest first and asks again for each (`placed` grows), so every link
    takes its share of the large guests and of the small ones, as list scheduling on links
    of different speeds does; a link held to its final share only would get the small
    guests the others left, whose fixed cost per migration then runs on the slow link at
    the end. Where the source binds (targets as fast as it, little in flight) every budget
    is at least what was placed, so nothing is held back and the load score alone leads;
    where the targets bind (a fast source into slower targets) the budgets are shares in
    proportion to the links.
    An undeclared source weighs as an average declared target; with no target declared
    the targets weigh 1 (`ingress_weights`) and so does the source, whatever it declares:
    equal links, nothing held back.
    """
    declared = [link_gbps[name] for name in weights if name in link_gbps]
    egress = link_gbps.get(source, sum(declared) / len(declared)) if declared else 1.0
    ingress = sum(weights.values())
    floor = max(placed / egress, (placed + elsewhere) / ingress) if ingress > 0 else 0.0
    return {name: weight * floor for name, weight in weights.items()}
