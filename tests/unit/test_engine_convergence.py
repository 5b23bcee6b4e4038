"""Convergence-aware admission: a stream starts only while every stream on its links keeps a
share comfortably above what its guest re-dirties; user caps stay upper limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxmigrate.engine import EnginePolicy, Job, MaxStartups, MigrationEngine, Outcome

MIB = 2**20
GIB = 2**30
GBIT = 1e9 / 8 * 0.94  # payload bytes/s of 1 Gbit/s


def engine(**policy: object) -> MigrationEngine:
    # generous sshd and no spacing: only the stream rules decide
    base: dict[str, object] = {
        "max_parallel": 64,
        "ssh_max_startups": MaxStartups.parse("1000"),
        "handshake_safety": 1.0,
        "start_spread_seconds": 0.0,
        "handshake_seconds": 0.01,
    }
    base.update(policy)
    return MigrationEngine(EnginePolicy(**base))  # type: ignore[arg-type]


def job(index: int, memory: int, source: str = "pve1", priority: int = 0) -> Job:
    return Job(f"m{index}", 100 + index, source, f"pve{2 + index % 3}", priority, memory)


def start_all(eng: MigrationEngine, now: float) -> list[Job]:
    started: list[Job] = []
    for step in range(50):
        started += eng.poll(now + step * 0.05)
    return started


def test_a_write_heavy_giant_gets_a_link_with_few_companions() -> None:
    eng = engine(node_link_capacity=(("pve1", 10 * GBIT),))
    eng.submit(job(0, 28 * GIB, priority=1), 0.0)  # guessed 224 MiB/s: needs 448 MiB/s
    for index in range(1, 12):
        eng.submit(job(index, GIB), 0.0)
    first = start_all(eng, 0.0)
    assert first[0].key == "m0"
    assert len(first) == 2  # 1.175 GB/s shared by 3 would leave the giant < 448 MiB/s
    eng.finish("m0", 30.0, Outcome(True))
    assert len(start_all(eng, 30.0)) == 7  # small guests fill the link up to the rate floor


def test_streams_per_link_follow_the_link() -> None:
    slow = engine(node_link_capacity=(("pve1", GBIT),))
    fast = engine(node_link_capacity=(("pve1", 10 * GBIT),))
    for eng in (slow, fast):
        for index in range(20):
            eng.submit(job(index, GIB), 0.0)
    # 128 MiB/s per stream (the rate floor) from the 2nd on: 2 on 1 Gbit/s, 8 on 10 Gbit/s
    assert len(start_all(slow, 0.0)) == 2
    assert len(start_all(fast, 0.0)) == 8
    off = engine(node_link_capacity=(("pve1", GBIT),), min_stream_rate=None)
    for index in range(20):
        off.submit(job(index, GIB), 0.0)
    # without the floor, convergence alone: small guests are guessed at 16 MiB/s, so each
    # needs 32 MiB/s, and 3 fit 1 Gbit/s
    assert len(start_all(off, 0.0)) == 3


def test_before_any_rate_a_link_counts_as_1_gbit() -> None:
    eng = engine()  # nothing declared: the rate floor waits for rates, convergence does not
    for index in range(20):
        eng.submit(job(index, GIB), 0.0)
    started = start_all(eng, 0.0)
    assert len(started) == 3
    for item in started:  # the rates show a 10 Gbit/s link: 3 x 390 MB/s
        eng.observe_rate(item.key, 10 * GBIT / 3, (0.0, 10 * GBIT / 3))
    assert len(start_all(eng, 1.0)) == 5  # up to the rate floor's 8


def test_a_dirty_rate_the_log_tells_replaces_the_guess() -> None:
    eng = engine(node_link_capacity=(("pve1", 10 * GBIT),))
    for index in range(3):
        eng.submit(job(index, GIB), 0.0)
    started = start_all(eng, 0.0)
    assert len(started) == 3
    # `VM dirties lots of memory: 300 MiB/s`: that stream needs 600 MiB/s of the link
    eng.observe_rate("m0", 390 * MIB, (300 * MIB, 300 * MIB))
    eng.submit(job(9, GIB), 1.0)
    assert start_all(eng, 1.0) == []
    eng.finish("m0", 40.0, Outcome(True))
    assert [item.key for item in start_all(eng, 40.0)] == ["m9"]


def test_user_caps_stay_upper_limits() -> None:
    eng = engine(node_link_capacity=(("pve1", 25 * GBIT),), max_parallel_per_source=2)
    for index in range(10):
        eng.submit(job(index, GIB), 0.0)
    assert len(start_all(eng, 0.0)) == 2


def test_a_lone_stream_is_never_held_back() -> None:
    eng = engine(node_link_capacity=(("pve1", GBIT),))
    eng.submit(job(0, 200 * GIB), 0.0)  # needs far more than the whole link
    assert len(start_all(eng, 0.0)) == 1


guests = st.lists(st.integers(0, 64 * GIB), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    memories=guests,
    gbit=st.sampled_from([1, 2.5, 10, 25]),
    margin=st.floats(1.0, 4.0),
    cap=st.integers(1, 40),
)
def test_every_start_leaves_each_stream_its_share(
    memories: list[int], gbit: float, margin: float, cap: int
) -> None:
    """Whenever streams share the source, each one's share of the link is at least the margin
    times its guessed dirty rate; caps hold; finishing in order, every job runs."""
    policy_fields = {
        "node_link_capacity": (("pve1", gbit * GBIT),),
        "convergence_margin": margin,
        "max_parallel": cap,
    }
    eng = engine(**policy_fields)
    policy = eng.policy
    for index, memory in enumerate(memories):
        eng.submit(job(index, memory), 0.0)

    def need(item: Job) -> float:
        dirty = max(policy.assumed_dirty_floor, item.memory_bytes * policy.assumed_dirty_share)
        return margin * dirty

    running: list[Job] = []
    done = 0
    now = 0.0
    while done < len(memories):
        running += start_all(eng, now)
        assert 1 <= len(running) <= cap
        if len(running) > 1:
            share = gbit * GBIT / len(running)
            assert all(share >= need(item) * (1 - 1e-9) for item in running)
        now += 10.0
        eng.finish(running.pop(0).key, now, Outcome(True))
        done += 1


def test_a_declared_link_is_not_shrunk_by_a_capped_stream() -> None:
    for declared, companions in (((("pve1", 25 * GBIT),), 5), ((), 1)):
        eng = engine(node_link_capacity=declared)
        eng.submit(job(0, 28 * GIB, priority=1), 0.0)  # needs 448 MiB/s
        assert [item.key for item in start_all(eng, 0.0)] == ["m0"]
        eng.observe_rate("m0", GIB, (0.0, GIB))  # alone at the cipher cap: 1 GiB/s
        for index in range(1, 12):
            eng.submit(job(index, GIB), 1.0)
        assert len(start_all(eng, 1.0)) == companions


def test_a_predicted_end_keeps_the_stream_on_its_links() -> None:
    """A predicted end (`notify_ending`) only paces the end phase's logins: the stream may
    still send (a write-heavy guest freed on its prediction doubled its downtime limit when
    a companion joined it); the log's `migration status: completed` frees its share."""
    eng = engine(node_link_capacity=(("pve1", 10 * GBIT),))
    eng.submit(job(0, 28 * GIB, priority=1), 0.0)
    eng.submit(job(1, 28 * GIB, priority=1), 0.0)
    eng.submit(job(2, 28 * GIB), 0.0)
    assert [j.key for j in start_all(eng, 0.0)] == ["m0", "m1"]  # a third leaves < 448 MiB/s
    eng.notify_ending("m0", 60.0)
    assert start_all(eng, 60.0) == []
    eng.notify_transfer_ended("m0")  # its end phase (`rm -f`, `qm unlock`) sends no memory
    assert [j.key for j in start_all(eng, 61.0)] == ["m2"]


def test_a_capped_rate_counts_only_the_streams_sending() -> None:
    """A stream at its cipher cap tells the link carries its rate times the streams sending
    with it, not times those still in their start phase: 1 GiB/s on a 10 Gbit/s link read as
    5 GiB/s let three write-heavy giants start at once."""
    eng = engine(assumed_dirty_floor=MIB)  # small guests that do not hold each other back
    for index in range(5):
        eng.submit(job(index, 0), 0.0)
    assert len(start_all(eng, 0.0)) == 5
    eng.notify_tunnel_up("m0", 5.0)
    eng.observe_rate("m0", 1024 * MIB)  # capped; m1..m4 are still logging in
    eng.submit(job(5, 28 * GIB), 6.0)
    # told 1 GiB/s (not 5): the giant beside 5 streams would get 171 MiB/s, below 448 MiB/s
    assert start_all(eng, 6.0) == []
    for key in ("m1", "m2", "m3", "m4"):
        eng.notify_tunnel_up(key, 7.0)
        eng.observe_rate(key, 1024 * MIB)
    assert [j.key for j in start_all(eng, 7.0)] == ["m5"]  # 5 GiB/s seen sent: 853 MiB/s
