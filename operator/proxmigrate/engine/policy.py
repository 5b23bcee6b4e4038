"""Engine settings: plain frozen values, validated once, in real seconds.

Nothing here is hard-coded elsewhere: the operator may drive a time-scaled simulator, so every
duration is a setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def link_payload(gbit_per_second: float) -> float:
    """TCP payload bytes/s of a `gbit_per_second` link, one direction: 94 % (1448 of 1538
    bytes per frame at MTU 1500 with TCP timestamps)."""
    return gbit_per_second * 1e9 / 8 * 0.94


@dataclass(frozen=True)
class MaxStartups:
    """A target's sshd `MaxStartups start:rate:full`.

    sshd drops nothing while fewer than `start` connections are unauthenticated, then drops
    with probability `rate`% rising to 100% at `full` (OpenSSH `sshd.c::should_drop_connection`;
    default `10:30:100` from `servconf.c`; docs/reference/proxmox.md#sshd-maxstartups).
    """

    start: int = 10
    rate: int = 30
    full: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.full:
            raise ValueError(f"MaxStartups needs 1 <= start <= full, got {self}")
        if not 0 <= self.rate <= 100:
            raise ValueError(f"MaxStartups rate must be 0..100, got {self.rate}")

    @classmethod
    def parse(cls, text: str) -> MaxStartups:
        """Read `start:rate:full`, or a single `N` (sshd: a hard limit of N, no random drops)."""
        parts = text.strip().split(":")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            raise ValueError(f"MaxStartups must be N or start:rate:full, got {text!r}") from None
        if len(numbers) == 1:
            return cls(start=numbers[0], rate=100, full=numbers[0])
        if len(numbers) == 3:
            return cls(start=numbers[0], rate=numbers[1], full=numbers[2])
        raise ValueError(f"MaxStartups must be N or start:rate:full, got {text!r}")

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: attempt `n` waits `base * 2**(n-1)` (capped) ± jitter."""

    max_attempts: int = 5  # total attempts, the first included
    backoff_base: float = 5.0  # seconds before the second attempt
    backoff_max: float = 300.0  # cap on one wait, seconds
    jitter: float = 0.2  # each wait is scaled by a uniform factor in [1 - jitter, 1 + jitter]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("retry.max_attempts must be >= 1")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base:
            raise ValueError("retry needs 0 <= backoff_base <= backoff_max")
        if not 0 <= self.jitter < 1:
            raise ValueError("retry.jitter must be in [0, 1)")


@dataclass(frozen=True)
class EnginePolicy:
    """Everything the engine enforces; see the package docstring for the pacing model."""

    max_parallel: int = 8
    max_parallel_per_target: int | None = None  # None: only max_parallel applies
    max_parallel_per_source: int | None = None
    ssh_max_startups: MaxStartups = field(default_factory=MaxStartups)
    # Share of MaxStartups `start` our migrations may hold at most; the rest is left to
    # everything else that logs into the target (admins, replication, other tools).
    handshake_safety: float = 0.5
    # connect-to-authenticated time of one SSH login; 0.24 s median measured
    # (docs/reference/proxmox.md#figures-and-measurements)
    handshake_seconds: float = 0.25
    # From a migration's start until its last start-phase handshake (/bin/true, qm start,
    # mtunnel) has begun: `qm start` takes 1-4 s, tunnel setup about 1 s (published task logs,
    # docs/reference/proxmox.md#figures-and-measurements).
    start_spread_seconds: float = 5.0
    # From "transfer finishing" until its last end-phase handshake (rm -f, qm unlock) has
    # begun: the end phase takes about 2 s (docs/reference/proxmox.md#figures-and-measurements).
    end_spread_seconds: float = 2.0
    aimd_increase_every: int = 5  # successes on a target that raise its allowance by one
    # Waiting this long raises a queued job's effective priority by one (None: strict priority).
    priority_aging_seconds: float | None = 600.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Keep each RAM stream of a source at least this fast (bytes/s; None: no such limit): a
    # new migration may leave a source only while the transfer rates seen there, shared by
    # one more stream, stay above it. Slower streams fall behind their guests' dirtying and
    # re-send memory for ever (QEMU pre-copy); 128 MiB/s is about 1/8 of a secure stream's
    # cipher cap (~1 GiB/s, docs/reference/proxmox.md#figures-and-measurements), i.e. ~8
    # streams on 10 Gbit/s, ~21 on 25 Gbit/s.
    min_stream_rate: float | None = 128 * 2**20
    # A stream reporting at least this rate (bytes/s; None: never) may be held back by its
    # own cipher, not by the link: one ssh/sshd pair runs on one core, about 800 MiB/s with
    # 1.0-1.1 GiB/s peaks in published PVE 9 logs (docs/reference/proxmox.md
    # #figures-and-measurements). Its rate tells only that the link carries at least that
    # much (times the streams sharing it), not what the link is.
    capped_stream_rate: float | None = 768 * 2**20
    # Below this many migrations a source is never held back by `min_stream_rate`: slow links
    # (1 Gbit/s) still overlap the fixed per-migration cost (qm start, tunnel, cleanup).
    min_streams_per_source: int = 2
    # With the floor on, at most this many of a source's streams may run with no rate seen yet
    # (a task's rate shows in its log ~10 s after its start): a burst of starts cannot
    # overfill a link before its first rates arrive. 8 is the default maxParallel.
    unmeasured_streams_per_source: int = 8
    # Convergence: a stream may share a link only while its share stays at least this many
    # times what its guest re-dirties (None: off). QEMU's pre-copy sends a guest's memory
    # about 1 / (1 - dirty/rate) times, so 2 caps the re-sent bytes at as much again, and a
    # stream at or below its guest's dirty rate only converges by doubling the downtime limit.
    convergence_margin: float | None = 2.0
    # A guest's dirty rate, guessed as this share of its memory in use per second until its
    # progress lines bound it (QEMU reports no dirty rate in a first pass, and PVE names it
    # only above the stream's: docs/reference/proxmox.md "What QEMU reports during a
    # pass"). Assumption,
    # on the safe side for big guests: 28 GiB in use -> 224 MiB/s (a busy database), 1 GiB
    # -> 8 MiB/s (the bench mix's median guest dirties 10 MiB/s).
    assumed_dirty_share: float = 1 / 128
    # ... and at least this (bytes/s): a small guest's rate is no more known than a big
    # one's (the bench mix: a quarter of the guests dirty more than 16 MiB/s).
    assumed_dirty_floor: float = 16 * 2**20
    # A node's link capacity for the convergence rule until its rates are seen or one is
    # declared (bytes/s): 1 Gbit/s, the slowest link a migration network is likely to use,
    # at 94 % TCP payload. A faster link only lets a few more streams start after ~10 s.
    cold_link_capacity: float = link_payload(1.0)
    # Link capacity per node (bytes/s, one direction), known before any rate is seen: a
    # declared value for a cold start, e.g. 1 Gbit/s nodes (ProxmoxCluster `nodeLinks`).
    node_link_capacity: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_parallel", "max_parallel_per_target", "max_parallel_per_source"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 < self.handshake_safety <= 1:
            raise ValueError("handshake_safety must be in (0, 1]")
        if self.handshake_seconds <= 0:
            raise ValueError("handshake_seconds must be > 0")
        if self.start_spread_seconds < 0 or self.end_spread_seconds < 0:
            raise ValueError("start_spread_seconds and end_spread_seconds must be >= 0")
        if self.aimd_increase_every < 1:
            raise ValueError("aimd_increase_every must be >= 1")
        if self.min_stream_rate is not None and self.min_stream_rate <= 0:
            raise ValueError("min_stream_rate must be > 0 or None")
        if self.capped_stream_rate is not None and self.capped_stream_rate <= 0:
            raise ValueError("capped_stream_rate must be > 0 or None")
        if self.min_streams_per_source < 1 or self.unmeasured_streams_per_source < 1:
            raise ValueError(
                "min_streams_per_source and unmeasured_streams_per_source must be >= 1"
            )
        if self.convergence_margin is not None and self.convergence_margin < 1:
            raise ValueError("convergence_margin must be >= 1 or None")
        if self.cold_link_capacity <= 0:
            raise ValueError("cold_link_capacity must be > 0")
        if self.assumed_dirty_floor < 0:
            raise ValueError("assumed_dirty_floor must be >= 0")
        if not 0 <= self.assumed_dirty_share < 1:
            raise ValueError("assumed_dirty_share must be in [0, 1)")
        for node, capacity in self.node_link_capacity:
            if capacity <= 0:
                raise ValueError(f"link capacity of {node} must be > 0, got {capacity}")
        if self.priority_aging_seconds is not None and self.priority_aging_seconds <= 0:
            raise ValueError("priority_aging_seconds must be > 0 or None")

    @property
    def target_concurrency_cap(self) -> int:
        """Most migrations one target may receive at once, before any AIMD reduction."""
        if self.max_parallel_per_target is None:
            return self.max_parallel
        return min(self.max_parallel, self.max_parallel_per_target)

    @property
    def handshake_budget(self) -> int:
        """Most pending handshakes our migrations may hold on one target (at least one)."""
        # the epsilon keeps e.g. 100 * 0.29 (28.999...) from rounding down a whole slot
        return max(1, int(self.ssh_max_startups.start * self.handshake_safety + 1e-9))

    def declared_link(self, node: str) -> float | None:
        """The declared link capacity of `node` (bytes/s), None if none was declared."""
        return dict(self.node_link_capacity).get(node)

    @property
    def start_window_seconds(self) -> float:
        """How long a starting migration may hold an sshd start-up slot on its target."""
        return self.start_spread_seconds + self.handshake_seconds

    @property
    def end_window_seconds(self) -> float:
        """How long an ending migration may hold an sshd start-up slot on its target."""
        return self.end_spread_seconds + self.handshake_seconds
