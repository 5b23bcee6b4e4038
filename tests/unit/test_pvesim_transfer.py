"""pvesim's RAM transfer against QEMU's passes and PVE's phase2 loop (pvesim/model/qemu_ram.py,
docs/reference/proxmox.md "What QEMU reports during a pass")."""

from __future__ import annotations

from datetime import datetime

import pytest

from pvesim.model import from_config
from pvesim.model.params import GiB, MiB
from pvesim.model.phase2_polls import Phase2Polls
from pvesim.model.qemu_ram import SYNC_TIMESLICE, RamMigration

RATE = 100 * MiB  # the bandwidth limit of these migrations: 102400 KiB/s


def _migrate(
    dirty_mib_s: float, used_gib: float = 4, memory_gib: float = 8, bwlimit: int | None = RATE
) -> list[str]:
    """One live migration, at 100 MiB/s unless told; its task log from `start migrate
    command` on."""
    nodes = [{"name": f"pve{i}", "memory_gib": 64} for i in (1, 2)]
    vm = {"vmid": 100, "node": "pve1", "memory_gib": memory_gib, "used_gib": used_gib}
    cluster = from_config({"nodes": nodes, "vms": [vm | {"dirty_mib_s": dirty_mib_s}]}, seed=1)
    kib = bwlimit // 1024 if bwlimit else None
    upid = cluster.migrate("pve1", 100, "pve2", online=True, bwlimit=kib)
    cluster.run_until_idle()
    assert cluster.migrations[100][-1].outcome == "ok"
    lines = cluster.tasks[upid].lines
    return lines[next(i for i, line in enumerate(lines) if "start migrate command" in line) :]


def _seconds(lines: list[str], line: str) -> float:
    """Seconds from the first line (the migrate command) to `line`, by their timestamps."""
    stamp = "%Y-%m-%d %H:%M:%S"
    return (datetime.strptime(line[:19], stamp) - datetime.strptime(lines[0][:19], stamp)).seconds


def test_the_dirty_rate_shows_only_after_the_first_pass() -> None:
    """dirty-pages-rate is 0 until the first sync, which ends the first pass (4 GiB at
    100 MiB/s: 41 s); then it is the pages the pass's 41 s dirtied again, 150 MiB/s."""
    lines = _migrate(dirty_mib_s=150)
    dirties = [line for line in lines if "VM dirties lots of memory" in line]
    assert dirties
    assert _seconds(lines, dirties[0]) >= 4 * GiB / RATE
    assert dirties[0].endswith("VM dirties lots of memory: 150.0 MiB/s")


def test_the_first_pass_logs_the_pages_it_handles_then_the_wire_rate() -> None:
    """PVE logs QEMU's `pages-per-second` x page size, zero pages included: the first pass
    through 8 GiB of RAM with 4 GiB in use handles two pages per page on the wire, so it
    logs twice the 100 MiB/s sent while `transferred` grows by 100 MiB a second; the
    passes after it re-send written pages only and log the wire rate."""
    lines = _migrate(dirty_mib_s=10)
    progress = [line for line in lines if "migration active" in line]
    first_pass = 4 * GiB / RATE
    during = [line for line in progress if _seconds(lines, line) < first_pass - 1]
    after = [line for line in progress if _seconds(lines, line) > first_pass + 1]
    assert len(during) > 30 and after
    assert all(line.endswith("VM-state, 200.0 MiB/s") for line in during)
    assert all(line.endswith("VM-state, 100.0 MiB/s") for line in after)
    assert "transferred 100.0 MiB of" in during[0] and "transferred 1000.0 MiB of" in during[9]


def test_no_downtime_increase_during_the_first_pass() -> None:
    """`ram.remaining` only shrinks during the first pass: PVE's counter, which counts polls
    where it grew, starts counting at the first sync at the earliest."""
    lines = _migrate(dirty_mib_s=400)
    increases = [line for line in lines if "auto-increased downtime" in line]
    assert increases
    assert _seconds(lines, increases[0]) > 4 * GiB / RATE


def test_a_slow_writer_converges_in_passes_without_doubling() -> None:
    """Passes of 4 GiB, 0.4 GiB, ... at 100 MiB/s against 10 MiB/s written: the sum of the
    passes, 4 GiB / 90 MiB/s, and the 5 s syncs (each adds 50 MiB where 100 MiB left
    since the last poll) never make `remaining` grow between two polls."""
    lines = _migrate(dirty_mib_s=10)
    assert not [line for line in lines if "auto-increased" in line]
    end = next(line for line in lines if "migration completed" in line)
    assert _seconds(lines, end) == pytest.approx(4 * GiB / (90 * MiB), abs=2)


def test_pve_logs_the_end_at_its_next_poll() -> None:
    """QEMU completes 4.8 s after `migrate` (4.8 GiB at the 1 GiB/s of one ssh cipher core);
    phase2 still polls every 1 s (the 4th poll saw 0.8 GiB left, above the 0.75 GiB sent per
    poll so far), so it reads `completed` at 5 s: 16 GiB of RAM in 5 s."""
    lines = _migrate(dirty_mib_s=0, used_gib=4.8, memory_gib=16, bwlimit=None)
    assert [line for line in lines if "average migration speed: 3.2 GiB/s" in line]


def test_remaining_grows_only_at_a_sync_and_at_most_to_the_ram() -> None:
    ram = RamMigration(mem=4 * GiB, size=8 * GiB, dirty_rate=100 * MiB, start=0.0)
    ram.advance(sent=1 * GiB, seconds=10.0)
    assert ram.remaining == 3 * GiB and ram.dirty_pages_rate == 0.0
    ram.advance(sent=3 * GiB, seconds=30.0)
    assert ram.remaining == 0.0
    ram.sync(now=40.0, sent_total=4 * GiB)
    assert ram.remaining == 4000 * MiB
    assert ram.dirty_pages_rate == pytest.approx(100 * MiB)
    ram.advance(sent=0.0, seconds=100.0)
    ram.sync(now=140.0, sent_total=4 * GiB)
    assert ram.remaining == 8 * GiB  # every page of the RAM is dirty once, whatever it writes
    assert ram.dirty_pages_rate == pytest.approx((8 * GiB - 4000 * MiB) / 100)


def test_the_periodic_sync_waits_for_the_first_pass_and_for_a_quiet_tick() -> None:
    ram = RamMigration(mem=4 * GiB, size=8 * GiB, dirty_rate=100 * MiB, start=0.0)
    ram.tick(now=SYNC_TIMESLICE, sent_total=0.0)
    assert ram.syncs == 1  # the first pass: no periodic sync
    ram.sync(now=7.0, sent_total=4 * GiB)  # the first pass ends
    ram.tick(now=2 * SYNC_TIMESLICE, sent_total=4 * GiB)
    assert ram.syncs == 2  # a sync since the last tick
    ram.tick(now=3 * SYNC_TIMESLICE, sent_total=4 * GiB)
    assert ram.syncs == 3 and ram.next_tick == 4 * SYNC_TIMESLICE


def test_auto_converge_throttles_after_two_busy_periods() -> None:
    """Dirtied more than half of what was sent in two periods: 20 %, then 10 % more."""
    ram = RamMigration(mem=1 * GiB, size=64 * GiB, dirty_rate=100 * MiB, start=0.0)
    sent = 0.0
    for period, throttle in enumerate([0, 20, 20, 30], start=1):
        sent += 100 * MiB * 2
        ram.advance(sent=100 * MiB * 2, seconds=2.0)
        ram.sync(now=2.0 * period, sent_total=sent)
        assert ram.throttle == throttle
    assert ram.guest_dirty_rate == pytest.approx(70 * MiB)


def test_pve_polls_every_tenth_of_a_second_near_the_end_and_logs_every_tenth_poll() -> None:
    """QemuMigrate.pm phase2: 1 s polls, each logged; once `remaining` is below the bytes
    transferred per poll, 0.1 s polls for good, every 10th logged."""
    polls = Phase2Polls(usleep=1.0, fast=0.1, next_poll=1.0)
    assert polls.poll(1.0, sent=100.0, remaining=900.0) == (True, False)
    # 40 < 100 / 2: 0.1 s polls from now on, this 2nd one not logged
    assert polls.poll(2.0, sent=200.0, remaining=40.0) == (False, False)
    assert polls.usleep == 0.1 and polls.next_poll == 2.1
    assert polls.wake_at() == pytest.approx(2.8)  # the 10th poll; 3 to 9 cannot count
    polls.catch_up(2.8, sent=270.0, remaining=10.0, rate=100.0)
    assert polls.polls == 9 and polls.last_rem == pytest.approx(20.0)
    assert polls.poll(2.8, sent=270.0, remaining=10.0) == (True, False)
    polls.synced = True  # a sync: the next poll can see `remaining` grown
    assert polls.wake_at() == pytest.approx(2.9)
    assert polls.next_at(3.15) == pytest.approx(3.2)  # QEMU completed: the next poll reads it


def test_pve_doubles_after_six_polls_where_remaining_grew_shrinks_between_or_not() -> None:
    polls = Phase2Polls(usleep=1.0, fast=0.1, next_poll=1.0)
    remaining = [500.0, 600.0, 550.0, 700.0, 650.0, 800.0, 900.0, 1000.0, 1100.0]
    doubled = [
        polls.poll(1.0 + i, sent=10.0 * (i + 1), remaining=rem)[1]
        for i, rem in enumerate(remaining)
    ]
    assert doubled == [False] * 8 + [True] and polls.counter == 0
