"""Time remaining for a drain, from bytes still to copy and the bandwidth seen."""

from __future__ import annotations

from collections.abc import Mapping


def estimate_remaining_seconds(
    remaining_bytes_by_target: Mapping[str, int],
    link_bytes_per_second: float,
    running_moves: int,
    source_bytes_per_second: float | None = None,
) -> float | None:
    """The larger of two lower bounds, in seconds; None when no rate is known.

    - the busiest target link: its remaining bytes at `link_bytes_per_second`;
    - the aggregate: all remaining bytes at the rate `running_moves` parallel links give
      (at least one, at most one per target with bytes left), capped by the source node's
      outbound `source_bytes_per_second` when known.
    Per-move fixed costs (VM start, tunnel, cleanup: a few seconds each) are ignored.
    """
    pending = [size for size in remaining_bytes_by_target.values() if size > 0]
    if not pending:
        return 0.0
    if link_bytes_per_second <= 0:
        return None
    busiest_link = max(pending) / link_bytes_per_second
    parallel_links = max(1, min(running_moves, len(pending)))
    aggregate_rate = parallel_links * link_bytes_per_second
    if source_bytes_per_second is not None and source_bytes_per_second > 0:
        aggregate_rate = min(aggregate_rate, source_bytes_per_second)
    return max(busiest_link, sum(pending) / aggregate_rate)
