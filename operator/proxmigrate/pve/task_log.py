"""What a task's log tells (pure): its end line, its transfer's progress, its node's clock.

The runtime reads a few lines of a running task's log instead of its node's task list
where that tells more (runtime/log_look.py): the end line ends the task as well as a task
list would, the progress predicts the transfer's end, the stamps time the start phase.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

# The line a worker task's log ends with, written by the task itself as it exits (pve-common
# `src/PVE/RESTEnvironment.pm` fork_worker: `TASK OK`, `TASK WARNINGS: n`, `TASK ERROR: msg`);
# PVE 8 and 9 alike.
_TASK_END = re.compile(r"^TASK (OK|WARNINGS: \d+|ERROR: .+)$")


def log_exitstatus(log_lines: Sequence[str]) -> str | None:
    """The exit status a task's log ends with, as its task list row reports it (`OK`,
    `WARNINGS: n` or the error); None while the log has no end line.

    The task list takes its status from this very line (pve-common `src/PVE/UPID.pm`
    read_status reads the log's last line), so one log read tells whether a task ended as
    well as a task list would. A worker killed outright writes no end line: only the task
    list shows its end (`unexpected status`)."""
    end = _TASK_END.match(log_lines[-1]) if log_lines else None
    if end is None:
        return None
    status = end[1]
    return status[len("ERROR: ") :] if status.startswith("ERROR: ") else status


# `migration active, transferred 1.1 GiB of 8.0 GiB VM-state, 117.4 MiB/s`, and when QEMU's
# measured dirty rate (from the first pass's end on) exceeds the logged speed
# `, VM dirties lots of memory: 180.0 MiB/s` (qemu-server `src/PVE/QemuMigrate.pm` phase2;
# PVE 8 and 9 alike)
_PROGRESS = re.compile(
    r"migration active, transferred ([\d.]+) (B|KiB|MiB|GiB|TiB) of ([\d.]+) (B|KiB|MiB|GiB|TiB)"
    r"(?: VM-state, ([\d.]+) (B|KiB|MiB|GiB|TiB)/s)?"
    r"(?:.*VM dirties lots of memory: ([\d.]+) (B|KiB|MiB|GiB|TiB)/s)?"
)
_DONE = re.compile(r"migration status: completed|migration completed|average migration speed")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}

# phase2 polls `query-migrate` after a `usleep` of 1 s and logs every poll where
# `transferred` moved; once it polls every 0.1 s it logs every 10th (qemu-server
# `src/PVE/QemuMigrate.pm` phase2, PVE 8 and 9 alike): progress lines come a poll's second
# (and the query's few milliseconds) apart.
POLL_SECONDS = 1.0
# The wire rate is read between the last progress line and the nearest earlier one of the
# same read that is at least WIRE_MIN_SECONDS away and whose sizes' rounding is at most
# WIRE_TOLERANCE of the bytes sent between: sizes are rendered to a tenth of their unit
# (`1.1 GiB` is 1.05 to 1.15 GiB: at 100 MiB/s five seconds to err by a fifth), and the
# engine multiplies the rate by the streams sending now, so a nearer line tells the
# stream's share of the link now better than a farther one. At least two polls: over one,
# a query answered late (QEMU's monitor shares its main loop with the guest's I/O) skews
# the rate twice as much.
WIRE_MIN_SECONDS = 2.0
WIRE_TOLERANCE = 0.2  # the most the sizes' rounding may be of the bytes sent between


@dataclass(frozen=True)
class TransferProgress:
    """Where a task's RAM transfer stands, from its last progress line (`migration active,
    transferred X of Y VM-state, Z/s`, in bytes) or its completion line.

    `total` is the guest's RAM size (QEMU `query-migrate` `ram.total`), `transferred` every
    byte sent so far, pages sent again after the guest dirtied them included: it passes
    `total` once a busy guest's re-sent pages add up to more than its memory.
    """

    transferred: float
    total: float
    speed: float  # bytes/s as logged (pages per second); 0 when the line carried none
    completed: bool = False
    dirty_rate: float = 0.0  # bytes/s, shown by PVE only while it exceeds `speed`
    wire_rate: float | None = None  # bytes/s on the wire over the read's lines (`wire_rate`)

    @property
    def rate(self) -> float:
        """The stream's bytes/s on the wire. The logged speed is QEMU's `pages-per-second`
        x `page-size` (qemu-server `src/PVE/QemuMigrate.pm` phase2), and QEMU counts every
        page handled in the last 100 ms, zero pages included (QEMU `migration/migration.c`
        migration_update_counters, `migration/ram.c` ram_get_total_transferred_pages),
        while a zero page costs its header on the wire (ram.c save_zero_page): a first
        pass through partly unused RAM logs up to RAM / memory in use times what the link
        carries (docs/reference/proxmox.md "What QEMU reports during a pass"). So the
        bytes sent between two lines tell the rate where the read has them; the logged
        speed, at least the wire rate (a page on the wire is a page counted), bounds it
        and is all there is otherwise."""
        if self.wire_rate is None:
            return self.speed
        return min(self.speed, self.wire_rate) if self.speed > 0 else self.wire_rate

    @property
    def resending(self) -> bool:
        """The first pass is over: what is left is memory the guest dirtied meanwhile."""
        return not self.completed and self.transferred >= self.total

    @property
    def seconds_left(self) -> float | None:
        """Until the first pass ends at the current rate (a guest that keeps dirtying memory
        takes longer: re-check before relying on it); None without a rate, or once the
        first pass is over (`resending`): QEMU's remaining bytes are not in the log, so how
        long the re-sent pages take is unknown, and "0 left" would be wrong for minutes."""
        if self.completed:
            return 0.0
        if self.rate <= 0 or self.resending:
            return None
        return (self.total - self.transferred) / self.rate

    def dirty_bounds(self, elapsed: float) -> tuple[float, float]:
        """What the log tells of the guest's dirty rate after `elapsed` seconds of transfer,
        as (at least, at most) bytes/s. PVE names the rate only while QEMU's
        `dirty-pages-rate` exceeds the logged speed, and QEMU measures that rate only at a
        dirty bitmap sync, the first at the end of the first pass (QEMU `migration/ram.c`
        `migration_bitmap_sync` -> `migration_update_rates`; docs/reference/proxmox.md
        "What QEMU reports during a pass"). So a line without it bounds the rate by the
        speed only once the first pass is known over (`resending`: the whole memory
        sent); then the bytes sent past the guest's memory were re-dirtied within
        `elapsed`. Before that the log tells nothing of the guest."""
        if self.dirty_rate > 0:
            return self.dirty_rate, self.dirty_rate
        if not self.resending:
            return 0.0, float("inf")
        resent = self.transferred - self.total if elapsed > 0 else 0.0
        at_least = resent / elapsed if resent > 0 else 0.0
        return at_least, max(self.speed, at_least)


@dataclass(frozen=True)
class _Mark:
    """A progress line's stamp (`log_clock`) and `transferred`, exact to half a tenth of
    the `unit` it was rendered in (pve-common `src/PVE/Format.pm` render_bytes, one
    decimal as phase2 asks)."""

    clock: float
    transferred: float
    unit: float


def transfer_progress(log_lines: Sequence[str]) -> TransferProgress | None:
    """The latest progress of a task log, None before its first progress line; its rate
    on the wire from the read's progress lines and migrate command (`wire_rate`)."""
    for index in range(len(log_lines) - 1, -1, -1):
        line = log_lines[index]
        if _DONE.search(line):
            return TransferProgress(0.0, 0.0, 0.0, completed=True)
        latest = _PROGRESS.search(line)
        if latest is not None:
            return TransferProgress(
                _bytes(latest[1], latest[2]),
                _bytes(latest[3], latest[4]),
                _bytes(latest[5], latest[6]),
                dirty_rate=_bytes(latest[7], latest[8]),
                wire_rate=wire_rate(_marks(log_lines, index)),
            )
    return None


def _marks(log_lines: Sequence[str], last: int) -> Iterator[_Mark]:
    """The progress lines of `log_lines` from index `last` back, as marks, back to the
    migrate command (`transferred` 0, to the byte) or the first unstamped one; lazily: a
    long transfer's log has a line a second, and `wire_rate` needs the nearest few."""
    for line in (log_lines[index] for index in range(last, -1, -1)):
        start = _MIGRATE_START.match(line)
        if start is not None:
            yield _Mark(_seconds(start[1]), 0.0, 0.0)
            return
        progress = _PROGRESS.search(line)
        if progress is None:
            continue
        clock = log_clock(line)
        if clock is None:
            return
        yield _Mark(clock, _bytes(progress[1], progress[2]), _UNITS[progress[2]])


def wire_rate(marks: Iterable[_Mark]) -> float | None:
    """Bytes/s on the wire between the first of `marks` (progress lines of one read back
    to the migrate command, latest first) and the nearest other far enough apart
    (WIRE_MIN_SECONDS, WIRE_TOLERANCE): `transferred` is QEMU's bytes on the wire
    (`migration/migration-stats.c` migration_transferred_bytes, as `query-migrate`
    `ram.transferred`). Two lines are as many poll seconds apart as lines lie between
    them (POLL_SECONDS), held within a second of their stamps' distance (whole seconds,
    pve-guest-common `src/PVE/AbstractMigrate.pm` msg2text): a poll that saw `transferred`
    stand still, or a failed query, logs no progress line. None without such a pair."""
    ordered = iter(marks)
    last = next(ordered, None)
    if last is None:  # an unstamped line
        return None
    for apart, first in enumerate(ordered, start=1):
        stamps = last.clock - first.clock
        seconds = min(max(apart * POLL_SECONDS, stamps - 1), stamps + 1)
        sent = last.transferred - first.transferred
        rounding = (last.unit + first.unit) / 20
        if seconds >= WIRE_MIN_SECONDS and sent > 0 and rounding <= WIRE_TOLERANCE * sent:
            return sent / seconds
    return None


def _bytes(number: str | None, unit: str | None) -> float:
    return float(number) * _UNITS[unit] if number and unit else 0.0


# Every line a migration writes goes through AbstractMigrate's log, which stamps it with the
# node's local time to the second (pve-guest-common `src/PVE/AbstractMigrate.pm` msg2text:
# `strftime("%F %H:%M:%S", localtime)`); the start phase's last login answered when
# PVE::Tunnel logs the tunnel's version (pve-guest-common `src/PVE/Tunnel.pm`
# fork_ssh_tunnel: `ssh tunnel ver 1`). PVE 8 and 9 alike.
_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")
_TUNNEL_UP = re.compile(_STAMPED.pattern + r"ssh tunnel ver \d+$")
# phase2 logs `start migrate command to <uri>` right before QMP `migrate`, then polls
# (qemu-server `src/PVE/QemuMigrate.pm` phase2, PVE 8 and 9 alike)
_MIGRATE_START = re.compile(_STAMPED.pattern + r"start migrate command to ")
# Its URI names the transport the migration runs over: phase2 has the target listen on
# `tcp` for `migration_type` insecure and on a `unix` socket (forwarded over SSH) for
# anything else (qemu-server `src/PVE/QemuMigrate.pm` phase2: `$state_uri = $migration_type
# eq 'insecure' ? 'tcp' : 'unix'`, the URI from the target's `migration listens on`; PVE 8
# and 9 alike). The type is the request's `migration_type` or else the datacenter's
# `migration` setting as the worker read it at its start (pve-guest-common
# `src/PVE/AbstractMigrate.pm` migrate).
_MIGRATE_URI = re.compile(_MIGRATE_START.pattern + r"(unix|tcp):")


def log_clock(line: str) -> float | None:
    """A log line's stamp in seconds, on a scale only good for differences (the node's time
    zone is unknown); None for an unstamped line (ssh's stderr, the TASK line)."""
    stamp = _STAMPED.match(line)
    return None if stamp is None else _seconds(stamp[1])


def _seconds(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")))


def first_clock(log_lines: Sequence[str]) -> float | None:
    """The first stamped line's `log_clock`: an HA migration's log begins with the resource
    agent's unstamped `task started by HA resource agent`."""
    return next((c for c in map(log_clock, log_lines) if c is not None), None)


def last_clock(log_lines: Sequence[str]) -> float | None:
    """The last stamped line's `log_clock` (the end line `TASK OK` has none)."""
    return next((c for c in map(log_clock, reversed(log_lines)) if c is not None), None)


def migration_secure(log_lines: Sequence[str]) -> bool | None:
    """Whether the live migration runs over the secure transport (True) or the insecure one
    (False), from its migrate command's URI; None if that line is not among these."""
    for line in log_lines:
        uri = _MIGRATE_URI.match(line)
        if uri is not None:
            return uri[2] == "unix"
    return None


def tunnel_up_clock(log_lines: Sequence[str]) -> float | None:
    """When (`log_clock`) the migration's SSH tunnel was up, None if not yet in these lines."""
    for line in log_lines:
        if _TUNNEL_UP.match(line):
            return log_clock(line)
    return None
