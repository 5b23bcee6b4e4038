"""Engine rules beyond caps and pacing: the stream-rate floor, one migration per VM."""

from __future__ import annotations

import pytest

from proxmigrate.engine import EnginePolicy, Job, MaxStartups, MigrationEngine, Outcome

MIB = 2**20


def engine(**policy: object) -> MigrationEngine:
    # generous sshd, no spacing and no convergence rule, so only the rate floor decides
    base: dict[str, object] = {
        "max_parallel": 32,
        "convergence_margin": None,
        "ssh_max_startups": MaxStartups.parse("1000"),
        "handshake_safety": 1.0,
        "start_spread_seconds": 0.0,
        "handshake_seconds": 0.01,
    }
    base.update(policy)
    return MigrationEngine(EnginePolicy(**base))  # type: ignore[arg-type]


def submit(eng: MigrationEngine, count: int) -> None:
    for index in range(count):
        eng.submit(Job(f"m{index}", 100 + index, "pve1", f"pve{2 + index % 8}"), 0.0)


def start_all(eng: MigrationEngine, now: float) -> list[Job]:
    started: list[Job] = []
    for step in range(200):
        started += eng.poll(now + step * 0.05)
    return started


def test_a_saturated_link_holds_new_streams_back() -> None:
    eng = engine(min_stream_rate=128 * MIB, unmeasured_streams_per_source=20)
    submit(eng, 20)
    first = start_all(eng, 0.0)
    assert len(first) == 20  # no rates known yet: only the caps apply
    for job in first[:8]:
        eng.finish(job.key, 20.0, Outcome(True))
    for job in first[8:]:
        eng.observe_rate(job.key, 1100 * MIB / 12)  # 12 streams share ~1.1 GiB/s
    for index in range(4):
        eng.submit(Job(f"n{index}", 200 + index, "pve1", "pve2"), 20.0)
    assert start_all(eng, 20.0) == []  # 1.1 GiB/s over 13 streams is below 128 MiB/s


def test_streams_at_full_speed_do_not_hold_anything_back() -> None:
    eng = engine(min_stream_rate=128 * MIB)
    submit(eng, 6)
    started = start_all(eng, 0.0)
    for job in started:
        eng.observe_rate(job.key, 1024 * MIB)  # each at the cipher cap: the link has room
    eng.submit(Job("more", 300, "pve1", "pve2"), 1.0)
    assert [job.key for job in start_all(eng, 1.0)] == ["more"]


@pytest.mark.parametrize("floor", [None, 128 * MIB])
def test_below_the_minimum_streams_a_source_is_never_held_back(floor: float | None) -> None:
    eng = engine(min_stream_rate=floor, min_streams_per_source=4)
    submit(eng, 3)
    started = start_all(eng, 0.0)
    for job in started:
        eng.observe_rate(job.key, 10 * MIB)  # a 1 Gbit/s link shared by three
    eng.submit(Job("fourth", 400, "pve1", "pve2"), 1.0)
    assert [job.key for job in start_all(eng, 1.0)] == ["fourth"]
    eng.submit(Job("fifth", 401, "pve1", "pve3"), 2.0)
    assert bool(start_all(eng, 2.0)) is (floor is None)


def test_rates_seen_when_fewer_streams_ran_are_not_scaled_by_todays_count() -> None:
    eng = engine(min_stream_rate=128 * MIB, unmeasured_streams_per_source=20)
    submit(eng, 2)
    pair = start_all(eng, 0.0)
    for job in pair:
        eng.observe_rate(job.key, 560 * MIB)  # two streams fill a ~1.1 GiB/s link
    eng.submit(Job("third", 300, "pve1", "pve2"), 1.0)
    assert len(start_all(eng, 1.0)) == 1  # below min_streams_per_source
    for index in range(10):
        eng.submit(Job(f"n{index}", 400 + index, "pve1", "pve3"), 2.0)
    # 1.1 GiB/s over 9 streams is 124 MiB/s each: the ninth waits (560 x 11 would not)
    assert len(start_all(eng, 2.0)) == 5


def test_the_least_told_outflow_decides() -> None:
    eng = engine(min_stream_rate=128 * MIB)
    submit(eng, 4)
    started = start_all(eng, 0.0)
    eng.observe_rate(started[0].key, 1024 * MIB)  # 4 GiB/s if all four were sending
    eng.observe_rate(started[1].key, 150 * MIB)  # 600 MiB/s: the others were not sending yet
    eng.submit(Job("fifth", 500, "pve1", "pve2"), 1.0)
    assert start_all(eng, 1.0) == []  # 600 MiB/s over 5 streams is below 128 MiB/s


def test_a_burst_waits_for_the_first_rates_before_growing_past_the_unmeasured_limit() -> None:
    eng = engine(min_stream_rate=128 * MIB, unmeasured_streams_per_source=8)
    submit(eng, 20)
    first = start_all(eng, 0.0)
    assert len(first) == 8  # no rate seen yet: the link is not known to have room
    for job in first:
        eng.observe_rate(job.key, 1024 * MIB)  # all at the cipher cap: room for more
    assert len(start_all(eng, 20.0)) == 8  # the next eight, unmeasured in turn


def test_two_jobs_for_one_vm_never_run_together() -> None:
    eng = engine()
    eng.submit(Job("drain-100", 100, "pve1", "pve2"), 0.0)
    eng.submit(Job("placement-100", 100, "pve1", "pve3"), 0.0)
    assert [job.key for job in start_all(eng, 0.0)] == ["drain-100"]
    eng.finish("drain-100", 5.0, Outcome(True))
    assert [job.key for job in start_all(eng, 5.0)] == ["placement-100"]


def test_streams_at_the_cipher_cap_add_up_to_the_link() -> None:
    """A stream at the cap tells only that the link carries at least its rate: alone at
    1 GiB/s, then eight at 1 GiB/s each, the link carries 8 GiB/s, not the lone 1 GiB/s."""
    eng = engine(min_stream_rate=128 * MIB, unmeasured_streams_per_source=64)
    submit(eng, 1)
    eng.observe_rate(start_all(eng, 0.0)[0].key, 1024 * MIB)  # alone at the cipher cap
    for index in range(1, 40):
        eng.submit(Job(f"m{index}", 100 + index, "pve1", f"pve{2 + index % 8}"), 1.0)
    more = start_all(eng, 1.0)
    assert len(more) == 7  # 1 GiB/s shared by 8 is the floor's 128 MiB/s
    for job in more:
        eng.notify_tunnel_up(job.key, 2.0)  # all eight send (none is in its start phase)
    eng.observe_rate(more[0].key, 1024 * MIB)  # still at the cap with 8 sending
    assert len(start_all(eng, 2.0)) == 24  # up to the cluster cap of 32 (8 GiB/s carry 64)


def test_a_rate_below_the_cap_tells_the_link_whatever_capped_streams_said() -> None:
    eng = engine(min_stream_rate=128 * MIB, unmeasured_streams_per_source=64)
    submit(eng, 1)
    eng.observe_rate(start_all(eng, 0.0)[0].key, 1024 * MIB)  # alone at the cap: >= 1 GiB/s
    for index in range(1, 40):
        eng.submit(Job(f"m{index}", 100 + index, "pve1", f"pve{2 + index % 8}"), 1.0)
    more = start_all(eng, 1.0)
    eng.observe_rate(more[0].key, 300 * MIB)  # set by the link: 8 x 300 MiB/s = 2.4 GiB/s
    # 2400 MiB/s keeps 128 MiB/s each for 18 streams: 10 more (the lone capped rate, 8 in all)
    assert len(start_all(eng, 2.0)) == 10
    eng.observe_rate(more[1].key, 100 * MIB)  # the link is fuller now: 18 x 100 MiB/s
    eng.submit(Job("n", 300, "pve1", "pve2"), 3.0)
    assert start_all(eng, 3.0) == []  # the least rate below the cap counts, as before
