"""QEMU's side of a precopy RAM migration, as `query-migrate` reports it: a fluid model in
passes (docs/reference/proxmox.md, "What QEMU reports during a pass").

`ram.remaining` is the dirty bitmap's count (QEMU `migration/ram.c` ram_bytes_remaining:
`migration_dirty_pages * TARGET_PAGE_SIZE`): it starts with every page of the guest's RAM
and only shrinks as pages are sent (migration_bitmap_clear_dirty). What the guest writes meanwhile
joins it only at a bitmap sync (migration_bitmap_sync -> ramblock_sync_dirty_bitmap, which
counts the pages not already dirty in the bitmap), and a sync happens when the pending
estimate falls below `threshold_size` (migration/migration.c migration_iteration_run ->
ram_state_pending_exact), i.e. at the end of a pass, and, from QEMU 9.2 with auto-converge
(which PVE turns on), every 5 s once the first pass is over (migration/cpu-throttle.c
cpu_throttle_dirty_sync_timer_tick). `dirty-pages-rate` is set only by a sync that closes a
period longer than 1 s (ram.c migration_bitmap_sync -> migration_update_rates), so it is 0
through the first pass. Auto-converge throttles the guest's CPUs at those same syncs
(ram.c migration_trigger_throttle, mig_throttle_guest_down).

The first pass copies the guest's memory in use (`mem`), not all of it: QEMU sends a zero
page as a header and a flag (ram.c save_zero_page), so the pages never written cost next to
nothing. The guest writes `dirty_rate` bytes/s of pages anywhere in its RAM (assumption: no
hot set), so a sync adds at most the pages of its RAM not already in the bitmap, and the
`dirty-pages-rate` of a period, which counts those newly set pages only
(include/exec/ram_addr.h cpu_physical_memory_sync_dirty_bitmap), is at most what the
period freed of the bitmap: while most of the RAM waits to be sent again it stays near the
speed, whatever the guest writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# QEMU migration/options.c defaults (PVE sets none of them: qemu-server
# src/PVE/QemuMigrate.pm phase2 sets max-bandwidth, downtime-limit, xbzrle-cache-size only)
THROTTLE_TRIGGER = 0.50  # DEFAULT_MIGRATE_THROTTLE_TRIGGER_THRESHOLD 50 (%)
THROTTLE_INITIAL = 20  # DEFAULT_MIGRATE_CPU_THROTTLE_INITIAL
THROTTLE_INCREMENT = 10  # DEFAULT_MIGRATE_CPU_THROTTLE_INCREMENT (tailslow off)
THROTTLE_MAX = 99  # DEFAULT_MIGRATE_MAX_CPU_THROTTLE
RATE_PERIOD = 1.0  # ram.c migration_bitmap_sync: rates and throttle over periods > 1000 ms
SYNC_TIMESLICE = 5.0  # cpu-throttle.c CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS (QEMU >= 9.2)


@dataclass
class RamMigration:
    """The source QEMU's RAM state from `migrate` to switch-over, in bytes and seconds."""

    mem: float  # what the first pass copies: the guest's memory in use
    size: float  # the guest's RAM: what the bitmap covers (ram_state_init)
    dirty_rate: float  # bytes/s the guest writes when not throttled
    start: float
    remaining: float = field(init=False)  # `ram.remaining`: pages still dirty in the bitmap
    dirtied: float = 0.0  # written since the last sync, not in the bitmap yet
    syncs: int = 1  # `dirty-sync-count`: ram_init_bitmaps syncs once at setup
    dirty_pages_rate: float = 0.0  # `dirty-pages-rate` x `page-size`, bytes/s
    throttle: int = 0  # auto-converge's `cpu-throttle-percentage`
    next_tick: float = field(init=False)  # the periodic sync timer
    _tick_syncs: int = 0  # throttle_dirty_sync_count_prev
    _period_start: float = field(init=False)  # time_last_bitmap_sync
    _period_added: float = 0.0  # num_dirty_pages_period, in bytes
    _period_sent_from: float = 0.0  # bytes_xfer_prev
    _high_periods: int = 0  # dirty_rate_high_cnt

    def __post_init__(self) -> None:
        self.remaining = self.mem
        self.next_tick = self.start + SYNC_TIMESLICE
        self._period_start = self.start

    @property
    def guest_dirty_rate(self) -> float:
        """What the guest writes now: a throttled vCPU runs (100 - pct)% of the time, and
        its writes with it (assumption: writes scale with CPU time)."""
        return self.dirty_rate * (1 - self.throttle / 100)

    def advance(self, sent: float, seconds: float) -> None:
        """`sent` more bytes left and `seconds` passed: the bitmap shrinks, writes pile up."""
        self.remaining = max(0.0, self.remaining - sent)
        self.dirtied += self.guest_dirty_rate * seconds

    def sync(self, now: float, sent_total: float) -> None:
        """migration_bitmap_sync: the pages written since the last sync join the bitmap
        (those still in it count once), and a period over 1 s sets the rates and may
        throttle the guest."""
        self.syncs += 1
        added = min(self.size, self.remaining + self.dirtied) - self.remaining
        self.remaining += added
        self.dirtied = 0.0
        self._period_added += added
        elapsed = now - self._period_start
        if elapsed <= RATE_PERIOD:
            return
        # migration_trigger_throttle: written > 50% of sent in the period, twice
        if self._period_added > THROTTLE_TRIGGER * (sent_total - self._period_sent_from):
            self._high_periods += 1
            if self._high_periods >= 2:
                self._high_periods = 0
                step = THROTTLE_INCREMENT if self.throttle else THROTTLE_INITIAL
                self.throttle = min(self.throttle + step, THROTTLE_MAX)
        self.dirty_pages_rate = self._period_added / elapsed  # migration_update_rates
        self._period_start, self._period_added = now, 0.0
        self._period_sent_from = sent_total

    def tick(self, now: float, sent_total: float) -> bool:
        """cpu_throttle_dirty_sync_timer_tick: sync unless the first pass is still on or a
        sync happened since the last tick; whether it synced."""
        synced = self.syncs > 1 and self.syncs == self._tick_syncs
        if synced:
            self.sync(now, sent_total)
        self._tick_syncs = self.syncs
        self.next_tick += SYNC_TIMESLICE
        return synced
