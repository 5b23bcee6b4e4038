"""What a drain did, read from the simulator's ground truth (`Cluster.ground_truth()` or
pvesim's `GET /_sim/state`, the same shape), so every contender is judged the same way."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pvesim.model import Cluster

SPURIOUS_REASONS = ("ssh_drop:", "port_exhausted")
"""Failures caused by load, not by the VM: sshd drops (any step) and insecure port exhaustion."""


@dataclass(frozen=True)
class TargetLoad:
    node: str
    vms: int  # drained guests that ended on this node
    bytes: int  # their memory in use (what their migrations copied at least)
    peak_inbound: int  # most migrations towards it at once
    ssh_drops: int  # connections its sshd dropped (from every source)
    peak_preauth: int  # most unauthenticated SSH connections it held at once


@dataclass(frozen=True)
class DrainOutcome:
    makespan: float  # seconds from the drain's start to its last migration's end
    attempts: int  # migration tasks of drained guests (retries included)
    moved: int  # movable guests no longer on a drained node
    left_behind: tuple[int, ...]  # movable guests still on a drained node
    failures: Mapping[str, int]  # ground-truth reason -> failed or troubled attempts
    peak_inflight: int
    inflight: tuple[tuple[float, int], ...]  # (seconds since start, migrations running) steps
    targets: tuple[TargetLoad, ...]

    @property
    def spurious_failures(self) -> int:
        return sum(n for reason, n in self.failures.items() if reason.startswith(SPURIOUS_REASONS))

    @property
    def ssh_drop_failures(self) -> int:
        return sum(n for reason, n in self.failures.items() if reason.startswith("ssh_drop:"))


def movable_guests(cluster: Cluster, drained: Collection[str]) -> dict[int, int]:
    """Guests that should leave the `drained` nodes (vmid -> memory in use): all but those
    with local devices, which PVE refuses to move."""
    return {
        vm.vmid: vm.mem
        for vm in cluster.vms.values()
        if vm.node in drained and not vm.local_devices
    }


def summarize(
    truth: Mapping[str, Any],
    *,
    drained: Collection[str],
    start: float,
    movable: Mapping[int, int],
) -> DrainOutcome:
    """Judge a drain of `drained` begun at `start`; `movable` maps each guest that should
    leave (vmid) to the bytes it has to copy."""
    records = [
        record
        for vmid in movable
        for record in truth["migrations"].get(str(vmid), [])
        if record["start"] >= start
    ]
    placement = truth["placement"]
    left = tuple(sorted(vmid for vmid in movable if placement[str(vmid)] in drained))
    failures = Counter(
        str(record["reason"]) for record in records if record.get("outcome") not in (None, "ok")
    )
    ends = [record["end"] for record in records if record.get("end") is not None]
    inflight = _inflight(records, start)
    return DrainOutcome(
        makespan=max(ends) - start if ends else 0.0,
        attempts=len(records),
        moved=len(movable) - len(left),
        left_behind=left,
        failures=dict(failures),
        peak_inflight=max((count for _, count in inflight), default=0),
        inflight=inflight,
        targets=_targets(truth, drained, records, movable),
    )


def _inflight(records: list[Mapping[str, Any]], start: float) -> tuple[tuple[float, int], ...]:
    changes: Counter[float] = Counter()
    for record in records:
        changes[record["start"] - start] += 1
        if record.get("end") is not None:
            changes[record["end"] - start] -= 1
    steps: list[tuple[float, int]] = []
    running = 0
    for at in sorted(changes):
        running += changes[at]
        steps.append((at, running))
    return tuple(steps)


def _targets(
    truth: Mapping[str, Any],
    drained: Collection[str],
    records: list[Mapping[str, Any]],
    movable: Mapping[int, int],
) -> tuple[TargetLoad, ...]:
    loads = []
    for node, sshd in sorted(truth["ssh"].items()):
        if node in drained:
            continue
        received = [vmid for vmid in movable if truth["placement"][str(vmid)] == node]
        inbound = [record for record in records if record["target"] == node]
        loads.append(
            TargetLoad(
                node=node,
                vms=len(received),
                bytes=sum(movable[vmid] for vmid in received),
                peak_inbound=max((n for _, n in _inflight(inbound, 0.0)), default=0),
                ssh_drops=int(sshd["drops"]),
                peak_preauth=int(sshd["peak_preauth"]),
            )
        )
    return tuple(loads)


# qemu-server `src/PVE/QemuMigrate.pm` phase2 (PVE 8 and 9 alike): the guest's pause as QEMU
# reports it, and each doubling of the downtime limit when the remaining bytes do not shrink
_PAUSE = re.compile(r"average migration speed: .* - downtime (\d+) ms")
_DOUBLING = "auto-increased downtime to continue migration"


@dataclass(frozen=True)
class Downtime:
    """Guest pauses of a drain's migrations, read from their task logs."""

    pauses_ms: tuple[int, ...]  # one per live migration that completed
    doublings: int  # downtime-limit doublings, all migrations together

    @property
    def max_ms(self) -> int:
        return max(self.pauses_ms, default=0)

    @property
    def p99_ms(self) -> int:
        """Nearest-rank 99th percentile."""
        ranked = sorted(self.pauses_ms)
        return ranked[max(0, math.ceil(0.99 * len(ranked)) - 1)] if ranked else 0


def downtime(task_logs: Iterable[Sequence[str]]) -> Downtime:
    """Pauses and doublings over the given migration task logs."""
    pauses: list[int] = []
    doublings = 0
    for lines in task_logs:
        for line in lines:
            if (pause := _PAUSE.search(line)) is not None:
                pauses.append(int(pause[1]))
            elif _DOUBLING in line:
                doublings += 1
    return Downtime(tuple(pauses), doublings)
