"""Guest pauses and downtime-limit doublings read from PVE's migration task lines."""

from __future__ import annotations

from proxmigrate.simulate.outcome import downtime

CALM = [
    "2026-01-01 00:00:09 average migration speed: 910.2 MiB/s - downtime 58 ms",
    "2026-01-01 00:00:09 migration completed, transferred 4.1 GiB VM-state",
]
BUSY = [
    "2026-01-01 00:01:09 auto-increased downtime to continue migration: 200 ms",
    "2026-01-01 00:01:15 auto-increased downtime to continue migration: 400 ms",
    "2026-01-01 00:01:19 average migration speed: 80.0 MiB/s - downtime 391 ms",
]


def test_pauses_and_doublings_over_several_logs() -> None:
    found = downtime([CALM] * 99 + [BUSY, ["2026-01-01 00:00:01 migration aborted"]])
    assert found.pauses_ms == (58,) * 99 + (391,)
    assert found.doublings == 2
    assert found.max_ms == 391
    assert found.p99_ms == 58  # nearest rank: the 99th of 100
    assert downtime([]).max_ms == downtime([]).p99_ms == 0
