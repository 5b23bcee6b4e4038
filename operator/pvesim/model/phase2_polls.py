"""PVE's `query-migrate` loop during a live migration: when it polls, which polls it logs,
and its downtime counter (qemu-server src/PVE/QemuMigrate.pm phase2; 8.3.13 the same;
docs/reference/proxmox.md#ram-transfer)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# seconds: sums of 0.1 s steps on epoch times (~1.7e9 s) drift by micro-seconds
SLACK = 1e-4


@dataclass
class Phase2Polls:
    """phase2's loop variables. It polls every `$usleep` (1 s), every 0.1 s for good once
    `remaining` is below the bytes transferred per poll so far (`$avglstat`), then logs
    only every 10th poll. A poll where `remaining` grew (or is 0) counts; more than 5
    counted polls double the downtime limit and restart the count, a shrinking poll does
    not reset it.

    The 0.1 s polls that neither log nor follow a bitmap sync cannot count (`remaining`
    only shrinks between syncs), so the model does not wake for them: `catch_up` books
    them from the values at the next wake.
    """

    usleep: float
    fast: float
    next_poll: float
    polls: int = 0  # $i
    last_transferred: float = 0.0  # $last_mem_transferred
    last_rem: float = 0.0  # $lastrem
    counter: int = 0  # $downtimecounter
    synced: bool = False  # QEMU synced its bitmap since the last poll

    def wake_at(self) -> float:
        """The next poll that can log or count."""
        if self.usleep > self.fast or self.synced:
            return self.next_poll
        return self.next_poll + (-(self.polls + 1) % 10) * self.usleep

    def catch_up(self, now: float, sent: float, remaining: float, rate: float) -> None:
        """Book the 0.1 s polls before `now` not woken for, read back at the stream's rate;
        call before a sync at `now` changes `remaining`."""
        while self.usleep <= self.fast and self.next_poll < now - SLACK:
            self.polls += 1
            back = now - self.next_poll
            self.last_rem = remaining + rate * back
            self.last_transferred = sent - rate * back
            self.next_poll += self.usleep

    def next_at(self, now: float) -> float:
        """The first poll at or after `now`: when phase2 reads QEMU's `completed`."""
        if self.next_poll >= now - SLACK:
            return self.next_poll
        return self.next_poll + math.ceil((now - self.next_poll) / self.usleep - 1e-6) * self.usleep

    def poll(self, now: float, sent: float, remaining: float) -> tuple[bool, bool]:
        """One poll reading `transferred` = `sent` and `remaining`: (log a progress line,
        double the downtime limit)."""
        self.polls += 1
        average = self.last_transferred / self.polls  # $avglstat
        log = double = False
        if sent != self.last_transferred:  # the block runs only when `transferred` moved
            if average and remaining < average:
                self.usleep = self.fast
            log = self.usleep > self.fast or self.polls % 10 == 0
            if (self.last_rem and remaining > self.last_rem) or remaining == 0:
                self.counter += 1
            self.last_rem = remaining
            if self.counter > 5:
                self.counter, double = 0, True
        self.last_transferred = sent
        self.next_poll = now + self.usleep
        self.synced = False
        return log, double
