"""The stream's rate on the wire from a read's progress lines, not the logged speed: PVE logs
QEMU's pages-per-second, zero pages included, so a first pass through partly unused RAM
logs more than the link carries (pve/task_log.py `TransferProgress.rate`)."""

from __future__ import annotations

import asyncio

import pytest

from proxmigrate.pve.task_log import transfer_progress
from tests.unit.test_runtime_cluster import FakePve, settle, started

MiB = 2**20
GiB = 2**30


def _line(second: int, transferred: str, speed: str, total: str = "8.0 GiB") -> str:
    return (
        f"2026-01-01 00:00:{second:02d} migration active, transferred {transferred} of "
        f"{total} VM-state, {speed}/s"
    )


def _first_pass(seconds: range, wire_mib: int, speed: str) -> list[str]:
    """A line a second, `wire_mib` MiB more on the wire each, logged at `speed`."""
    return [_line(s, f"{(s - seconds[0] + 1) * wire_mib:.1f} MiB", speed) for s in seconds]


def test_a_first_pass_through_unused_ram_reports_the_bytes_on_the_wire() -> None:
    """A quarter of the guest's RAM in use: 400 MiB/s of pages logged, 100 MiB a second
    on the wire."""
    progress = transfer_progress(_first_pass(range(5, 10), 100, "400.0 MiB"))
    assert progress is not None
    assert progress.speed == 400 * MiB
    assert progress.rate == pytest.approx(100 * MiB)
    assert progress.seconds_left == pytest.approx((8 * GiB - 500 * MiB) / (100 * MiB))


def test_lines_too_near_or_a_single_one_leave_the_logged_speed() -> None:
    for seconds in (range(5, 6), range(5, 7)):  # one line; two, a second apart
        progress = transfer_progress(_first_pass(seconds, 100, "400.0 MiB"))
        assert progress is not None and progress.rate == 400 * MiB
    three = transfer_progress(_first_pass(range(5, 8), 100, "400.0 MiB"))
    assert three is not None and three.rate == pytest.approx(100 * MiB)


def test_a_first_read_counts_from_the_migrate_command() -> None:
    """phase2 logs `start migrate command` right before QEMU's `migrate`, `transferred` 0:
    two progress lines after it are two polls of the stream, to the byte."""
    start = "2026-01-01 00:00:04 start migrate command to unix:/run/qemu-server/100.migrate"
    lines = [start, *_first_pass(range(5, 7), 100, "400.0 MiB")]
    progress = transfer_progress(lines)
    assert progress is not None and progress.rate == pytest.approx(100 * MiB)
    slow = [start, _line(5, "1.1 GiB", "3.0 GiB"), _line(6, "2.2 GiB", "3.0 GiB")]
    progress = transfer_progress(slow)  # 2.2 GiB is 2.15 to 2.25: within a fifth of it
    assert progress is not None and progress.rate == pytest.approx(1.1 * GiB)


def test_the_logged_speed_bounds_the_wire_rate() -> None:
    """After the first pass the speed is the wire's, and QEMU's over the last 100 ms: a
    stream whose share of the link just fell reports the lower of the two."""
    lines = _first_pass(range(5, 15), 100, "100.0 MiB")
    lines[-1] = lines[-1].replace("100.0 MiB/s", "60.0 MiB/s")
    progress = transfer_progress(lines)
    assert progress is not None and progress.rate == 60 * MiB


def test_sizes_rounded_to_a_tenth_of_a_gib_need_a_longer_span() -> None:
    """`5.1 GiB` is 5.05 to 5.15 GiB: 0.3 GiB in 3 s may be 0.2 or 0.4, so the logged speed
    stays; over 10 s, 1.0 GiB is within a tenth."""
    gib = [f"{5.0 + 0.1 * i:.1f} GiB" for i in range(11)]
    near = [_line(20 + i, gib[i], "300.0 MiB", "16.0 GiB") for i in range(4)]
    progress = transfer_progress(near)
    assert progress is not None and progress.rate == 300 * MiB
    far = [_line(20 + i, gib[i], "300.0 MiB", "16.0 GiB") for i in range(11)]
    progress = transfer_progress(far)
    assert progress is not None and progress.rate == pytest.approx(GiB / 10)


def test_the_lines_count_seconds_the_stamps_cannot_and_missing_lines_leave_the_stamps() -> None:
    """Polls a second apart: three lines stamped 2 s apart span 2 s of polls; a gap in the
    lines (a poll that saw nothing move, a failed query) leaves the stamps, less a second."""
    lines = [
        _line(5, "100.0 MiB", "400.0 MiB"),
        _line(6, "200.0 MiB", "400.0 MiB"),
        _line(7, "300.0 MiB", "400.0 MiB"),
    ]
    progress = transfer_progress(lines)
    assert progress is not None and progress.rate == pytest.approx(100 * MiB)
    gap = [_line(5, "100.0 MiB", "400.0 MiB"), _line(12, "400.0 MiB", "400.0 MiB")]
    progress = transfer_progress(gap)
    assert progress is not None and progress.rate == pytest.approx(300 * MiB / 6)


def test_the_nearest_line_far_enough_apart_counts() -> None:
    """The engine multiplies the rate by the streams sending now: a read of 40 s averaged
    over streams that came and went; 3 s back at 200 MiB/s (2 s: 400 MiB sent, `5.6 GiB`
    is +-51 MiB) is far enough."""
    lines = [_line(s, f"{s * 50:.1f} MiB", "800.0 MiB") for s in range(0, 15)]
    lines += [_line(s, f"{700 + (s - 14) * 200:.1f} MiB", "800.0 MiB") for s in range(15, 40)]
    progress = transfer_progress(lines)
    assert progress is not None and progress.rate == pytest.approx(200 * MiB)


def test_the_engine_learns_the_wire_rate_and_the_end_is_predicted_from_it() -> None:
    """The guest has 2 GiB of its 4 GiB in use; its first pass logs 200 MiB/s of pages for
    100 MiB/s on the wire: 1 GiB left takes 10.24 s, not 5.12 s."""

    async def scenario() -> None:
        pve = FakePve()
        rt, _, clock, upid = await started(pve)
        told: list[float] = []
        real = rt.engine.observe_rate

        def spy(
            key: str,
            bytes_per_second: float,
            dirty_bounds: tuple[float, float] | None = None,
            now: float | None = None,
        ) -> None:
            told.append(bytes_per_second)
            real(key, bytes_per_second, dirty_bounds, now)

        rt.engine.observe_rate = spy  # type: ignore[method-assign]
        pve.logs[upid] = [
            _line(s, f"{(s - 4) * 100 * 1.024:.1f} MiB", "200.0 MiB", "4.0 GiB")
            for s in range(5, 15)
        ]
        clock[0] += 20
        await settle(rt)
        assert told == [pytest.approx(102.4 * MiB)]
        clock[0] += 6  # the old prediction's end phase (5 s + end spread) is past
        await settle(rt)
        assert rt.engine.pending_handshakes("pve2", clock[0]) == 0  # 4 s before its end
        clock[0] += 2.5
        await settle(rt)
        assert rt.engine.pending_handshakes("pve2", clock[0]) == 1

    asyncio.run(scenario())
