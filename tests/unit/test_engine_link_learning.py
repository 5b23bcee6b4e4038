"""A source's link as rules 7 and 8 see it: the least outflow its streams told while they all
sent, not the overstated one a burst of starts or unseen transfer ends makes the latest
rates tell (bench/RESULTS.md, issue 13 ninth pass)."""

from __future__ import annotations

from typing import Any

from proxmigrate.engine import EnginePolicy, Job, MaxStartups, MigrationEngine, Outcome

MIB = 2**20
GIB = 2**30
LINK = 1120 * MIB  # a 10 Gbit/s link's payload


def engine(**policy: Any) -> MigrationEngine:
    # generous sshd and no spacing: only the stream rules decide
    return MigrationEngine(
        EnginePolicy(
            max_parallel=64,
            ssh_max_startups=MaxStartups.parse("1000"),
            handshake_safety=1.0,
            start_spread_seconds=0.0,
            handshake_seconds=0.01,
            **policy,
        )
    )


def job(index: int, memory: int = GIB, target: str = "pve2") -> Job:
    return Job(f"m{index}", 100 + index, "pve1", target, 0, memory)


def start_all(eng: MigrationEngine, now: float) -> list[Job]:
    started: list[Job] = []
    for step in range(50):
        started += eng.poll(now + step * 0.05)
    return started


def test_a_burst_of_starts_does_not_inflate_the_link() -> None:
    eng = engine()
    for index in range(30):
        eng.submit(job(index), 0.0)
    first = start_all(eng, 0.0)
    assert len(first) == 3  # cold: 1 Gbit/s until rates are seen
    for item in first:  # all three send: 3 x 373 MiB/s is the link
        eng.observe_rate(item.key, LINK / 3)
    burst = start_all(eng, 1.0)
    assert len(burst) == 5  # up to the rate floor: 8 x 140 MiB/s
    # The five new ones still log in; the first three's rates did not change, but times the
    # eight migrations of the source they now read as 2.9 GiB/s. The link is what all
    # sending told: 1120 MiB/s, so an 9th stream (124 MiB/s each) stays below the floor.
    for item in first:
        eng.observe_rate(item.key, LINK / 3)
    assert start_all(eng, 2.0) == []


def test_a_capped_rate_beside_unseen_transfer_ends_does_not_inflate_the_link() -> None:
    eng = engine()
    for index in range(3):  # m0 runs throughout, its rate never read
        eng.submit(job(index), 0.0)
    assert len(start_all(eng, 0.0)) == 3
    for key in ("m1", "m2"):  # read while the three ran: 3 x 560 MiB/s at most
        eng.observe_rate(key, LINK / 2)
    for key in ("m1", "m2"):
        eng.finish(key, 20.0, Outcome(True))
    for index in range(3, 7):
        eng.submit(job(index), 20.0)
    four = start_all(eng, 20.0)
    assert len(four) == 4
    for item in four:
        eng.notify_tunnel_up(item.key, 21.0)
    # three of them ended their transfer unseen; the fourth alone sends at its cipher's cap,
    # which times the four "sending" read as 4 GiB/s
    eng.observe_rate(four[-1].key, 1024 * MIB)
    # a 28 GiB guest (guessed 224 MiB/s) needs 448 MiB/s: 1680 MiB/s shared by 6 is 280
    eng.submit(job(9, 28 * GIB), 22.0)
    assert "m9" not in [item.key for item in start_all(eng, 22.0)]


def started_beside_slower_streams(
    fast_rate: float, fast_read_at: float, slow_read_at: float
) -> list[str]:
    """Seven streams from a 25 Gbit/s source to targets of their own read at `fast_rate`,
    four into pve3 read at 150 MiB/s; then one more job to pve3 and one to pve20 wait: which
    start?"""
    eng = engine(node_link_capacity=(("pve1", 25e9 / 8 * 0.94),))
    fast = [job(index, target=f"pve{4 + index}") for index in range(7)]
    slow = [job(10 + index, target="pve3") for index in range(4)]
    for item in fast + slow[:1]:
        eng.submit(item, 0.0)
    assert len(start_all(eng, 0.0)) == 8
    for item in fast:  # each alone on its 10 Gbit/s target, the 25 Gbit/s source roomy
        eng.observe_rate(item.key, fast_rate, now=fast_read_at)
    for item in slow[1:]:
        eng.submit(item, fast_read_at)
    assert len(start_all(eng, fast_read_at)) == 3
    for item in slow:
        eng.observe_rate(item.key, 150 * MIB, now=slow_read_at)
    eng.submit(job(20, target="pve3"), slow_read_at + 1)
    eng.submit(job(21, target="pve20"), slow_read_at + 1)
    return [item.key for item in start_all(eng, slow_read_at + 1)]


def test_a_target_holding_its_streams_is_not_crowded_further() -> None:
    # Read within a second of the faster ones, pve3's streams are held by pve3, 4 x 150
    # MiB/s: the source's outflow still allows a 12th stream (200 x 8 / 12 = 133 MiB/s
    # each), but pve3's 600 MiB/s shared by 5 would be 120 MiB/s, below the 128 MiB/s floor
    assert started_beside_slower_streams(200 * MIB, 1.0, slow_read_at=1.5) == ["m21"]
    # read 5 s later, beaten by far (below half the rate): held all the same
    assert started_beside_slower_streams(400 * MIB, 1.0, slow_read_at=6.0) == ["m21"]


def test_a_rate_read_earlier_and_not_far_faster_does_not_tell_a_stream_is_held() -> None:
    # The faster rates were read 5 s earlier, at another moment of the source's link (a
    # burst of starts, an end unseen), and are not far faster: they do not tell that pve3
    # holds its streams, so the 12th stream may go to pve3 (and a 13th, 200 x 8 / 13 = 123
    # MiB/s each, may not start)
    assert started_beside_slower_streams(200 * MIB, 1.0, slow_read_at=6.0) == ["m20"]


def test_what_the_links_told_lasts_while_migrations_run() -> None:
    eng = engine()
    for index in range(3):
        eng.submit(job(index), 0.0)
    first = start_all(eng, 0.0)
    for item in first:  # a busy link: 3 x 100 MiB/s, other traffic took the rest
        eng.observe_rate(item.key, 100 * MIB)
    for item in first:
        eng.finish(item.key, 30.0, Outcome(True))
    for index in range(3, 30):
        eng.submit(job(index), 3600.0)
    second = start_all(eng, 3600.0)  # as many as the last outflow told allows
    assert len(second) >= 2
    for item in second:  # the link is free again: all of it shared by them
        eng.observe_rate(item.key, LINK / len(second))
    # 1120 MiB/s, not the 300 of the last busy spell: up to the rate floor's 8
    assert len(start_all(eng, 3601.0)) == 8 - len(second)


def test_a_stream_at_its_share_of_the_source_link_is_not_held_by_its_target() -> None:
    eng = engine()
    pair = [job(0), job(1)]
    for item in pair:
        eng.submit(item, 0.0)
    assert len(start_all(eng, 0.0)) == 2
    for item in pair:  # both alone on the link, at its top rate: it carries 1120 MiB/s
        eng.observe_rate(item.key, LINK / 2, now=5.0)
    more = [job(2), job(3), job(4, target="pve3"), job(5, target="pve3")]
    for item in more:
        eng.submit(item, 10.0)
    assert len(start_all(eng, 10.0)) == 4
    # Six streams share the link now: pve3's read 187 MiB/s, three times the pair's rates
    # of 15 s ago, but that is their share of the source's 1120 MiB/s, not pve3 holding
    # them at 2 x 187 = 373 MiB/s. A third stream into pve3 is no worse off than one
    # into pve2 (7 x 160 MiB/s, above the 128 MiB/s floor).
    for item in more[2:]:
        eng.observe_rate(item.key, LINK / 6, now=20.0)
    eng.submit(job(6, target="pve3"), 21.0)
    assert [item.key for item in start_all(eng, 21.0)] == ["m6"]


def test_a_target_told_far_below_the_source_is_that_targets_not_the_sources() -> None:
    eng = engine()
    for item in (job(0), job(1, target="pve4"), job(2, target="pve4")):
        eng.submit(item, 0.0)
    assert len(start_all(eng, 0.0)) == 3
    # pve4's two streams are read first, at the top of what was read: 3 x 280 = 840 MiB/s
    # told on the way to pve4, then pve2's at 560: 1680 MiB/s on the way to pve2
    for key in ("m1", "m2"):
        eng.observe_rate(key, 280 * MIB, now=10.0)
    eng.observe_rate("m0", 560 * MIB, now=10.0)
    for key in ("m1", "m2"):
        eng.finish(key, 20.0, Outcome(True))
    more = [job(index) for index in range(3, 8)]
    for item in more:
        eng.submit(item, 20.0)
    assert len(start_all(eng, 20.0)) == 5
    for item in [job(0), *more]:  # six streams to pve2 share the source's 1680 MiB/s
        eng.observe_rate(item.key, 1680 * MIB / 6, now=30.0)
    # 840 is pve4's ingress, not the source's link: a 7th stream leaving the source gets
    # 240 MiB/s (1680 / 7), above the floor, and is alone into pve4; read as the source's
    # link, 840 / 7 = 120 MiB/s kept it queued while the source had room
    eng.submit(job(9, target="pve4"), 31.0)
    assert [item.key for item in start_all(eng, 31.0)] == ["m9"]
