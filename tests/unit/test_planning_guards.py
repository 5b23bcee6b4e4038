"""Flap guard and drain ETA helpers."""

from __future__ import annotations

import pytest

from proxmigrate.planning import FlapGuard, PlanError, estimate_remaining_seconds

HOUR = 3600.0


def test_flap_guard_counts_only_the_window() -> None:
    guard = FlapGuard(max_migrations=3, window_seconds=HOUR)
    now = 10 * HOUR
    assert guard.allows([], now)
    assert guard.allows([now - 2 * HOUR, now - 100, now - 50], now)  # one is outside
    history = [now - 3000, now - 100, now - 50]
    assert not guard.allows(history, now)
    assert guard.next_allowed_at(history, now) == now - 3000 + HOUR
    assert guard.allows(history, now - 3000 + HOUR)


def test_flap_guard_counts_future_timestamps_as_recent() -> None:
    assert not FlapGuard(max_migrations=1).allows([1_000.0], 900.0)


def test_flap_guard_rejects_nonsense_limits() -> None:
    with pytest.raises(PlanError):
        FlapGuard(max_migrations=0)
    with pytest.raises(PlanError):
        FlapGuard(window_seconds=0)


def test_eta_is_bounded_by_busiest_link_and_aggregate() -> None:
    mib = 1024**2
    remaining = {"pve2": 1000 * mib, "pve3": 200 * mib, "pve4": 0}
    # Two links in parallel at 100 MiB/s: the busiest link needs 10 s, the total 6 s.
    assert estimate_remaining_seconds(remaining, 100 * mib, running_moves=4) == 10.0
    # One move at a time: everything goes through one link, 12 s.
    assert estimate_remaining_seconds(remaining, 100 * mib, running_moves=1) == 12.0
    # A 50 MiB/s source caps the aggregate: 24 s.
    assert (
        estimate_remaining_seconds(remaining, 100 * mib, 4, source_bytes_per_second=50 * mib)
        == 24.0
    )


def test_eta_edge_cases() -> None:
    assert estimate_remaining_seconds({"pve2": 0}, 100.0, 0) == 0.0
    assert estimate_remaining_seconds({}, 0.0, 0) == 0.0
    assert estimate_remaining_seconds({"pve2": 10}, 0.0, 1) is None
