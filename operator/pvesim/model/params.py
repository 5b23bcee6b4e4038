"""Model parameters, each default with its source (`#x`: section x of docs/reference/proxmox.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class MaxStartups:
    """sshd `MaxStartups start:rate:full`."""

    start: int = 10  # OpenSSH servconf.c default 10:30:100, PVE keeps it (#sshd-maxstartups)
    rate: int = 30
    full: int = 100

    @classmethod
    def parse(cls, text: str) -> MaxStartups:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:  # a bare number means start == full (sshd_config(5))
            return cls(parts[0], 100, parts[0])
        start, rate, full = parts
        return cls(start, rate, full)

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"


@dataclass(frozen=True)
class SshdParams:
    """One node's sshd as seen by migration connections."""

    max_startups: MaxStartups = field(default_factory=MaxStartups)
    login_grace_time: float = 120.0  # sshd default LoginGraceTime 120 s (#sshd-maxstartups)
    per_source_penalties: bool = False  # on from OpenSSH 9.8, i.e. PVE 9 (#persourcepenalties)
    penalty_refuse_threshold: float = 15.0  # above 15 s refuse the source (#persourcepenalties)
    penalty_max: float = 600.0  # refusals last up to 600 s (#persourcepenalties)
    # A login (model/sshd.py): its pre-authentication, which holds a MaxStartups slot, is
    # CPU work lognormal around handshake_median for a lone login, and the handshakes to
    # one node share its CPU (each one median slower per `handshake_contention` others in
    # progress); its command runs once it is authenticated. The ssh client's start (fork,
    # exec, keys) before its TCP connect is uniform 0..client_start_max. Fitted to real
    # OpenSSH 9.2 on loopback (`python -m bench.sshd_calibration`, bench/sshd_real.json;
    # docs/pvesim.md "Calibration: the model against the real daemon"): N secure
    # migrations fired at once into one sshd on a 2-core VM shared with other jobs
    # (load 4-28).
    handshake_median: float = 0.32
    handshake_sigma: float = 0.2
    handshake_contention: float = 1.5
    client_start_max: float = 1.3


@dataclass(frozen=True)
class TimingParams:
    """How long PVE's steps take on the simulated clock."""

    api_worker_start: float = 0.15  # fork_worker + config load before `prepare`: assumption
    bin_true: float = 0.02  # `/bin/true` after authentication: assumption (trivial command)
    qm_start_min: float = 1.0  # `qm start` on the target 1-4 s (#figures-and-measurements)
    qm_start_max: float = 4.0
    tunnel_setup: float = 1.0  # tunnel setup about 1 s (#figures-and-measurements)
    end_phase: float = 2.0  # end phase about 2 s (#figures-and-measurements)
    short_command: float = 0.05  # `rm -f`, `qm unlock` after authentication: assumption
    poll_interval: float = 1.0  # query-migrate every 1 s (QemuMigrate.pm phase2, #ram-transfer)
    # every 0.1 s once the rest is below the bytes sent per poll (QemuMigrate.pm phase2)
    fast_poll_interval: float = 0.1
    downtime_limit: float = 0.1  # migrate_downtime default 0.1 s (#ram-transfer)
    downtime_overhead: float = 0.03  # switch-over cost: assumption, keeps 40-150 ms downtime
    port_reservation: float = 5.0  # pve-reserved-ports expire in 5 s (#insecure-migration-ports)
    # guest_migration_lock timeout (#api-refusals-before-a-task-exists)
    migration_lock_timeout: float = 10.0
    hamigrate_duration: float = 0.5  # hamigrate ends before the move (#ha-migrations): assumption
    ha_crm_interval: float = 10.0  # CRM rounds of 10 s (#ha-migrations)
    ha_lrm_interval: float = 10.0  # LRM round `$max_time = 10` (pve-ha-manager HA/LRM.pm work)
    migrateall_poll: float = 1.0  # migrateall checks worker PIDs every 1 s (#migrateall)


@dataclass(frozen=True)
class NetworkParams:
    """Link and stream capacities."""

    nic_gbit: float = 10.0  # default NIC 10 Gbit/s (issue 3)
    # TCP payload per Ethernet frame: 1448 / 1538 bytes (MTU 1500, TCP timestamps) = 94 %.
    link_efficiency: float = 0.94
    # One SSH channel is one ssh/sshd pair, so one core's cipher speed caps a secure stream:
    # 1.0-1.1 GiB/s peaks on 10 GbE in published PVE 9 logs (#figures-and-measurements).
    secure_stream_cap: float = 1.0 * GiB
    qemu_default_max_bandwidth: float = 16.0 * GiB  # max-bandwidth without limit (#ram-transfer)
    insecure_port_first: int = 60000  # 60000-60049, end excluded (#insecure-migration-ports)
    insecure_port_end: int = 60050


@dataclass(frozen=True)
class ModelParams:
    """Everything tunable in one value; `Cluster` copies it at construction."""

    sshd: SshdParams = field(default_factory=SshdParams)
    timing: TimingParams = field(default_factory=TimingParams)
    network: NetworkParams = field(default_factory=NetworkParams)
    pve_version: int = 8
    start_time: float = 1_735_689_600.0  # 2025-01-01T00:00:00Z, simulated epoch seconds
