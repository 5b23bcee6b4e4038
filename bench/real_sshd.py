"""`python -m bench.real_sshd`: one drain run with real OpenSSH sshd beside the model (issue 17).

Scenario: drain pve1 of 3 nodes, its 40 small guests (1 GiB, 0.25 GiB in use, so a run takes
tens of real seconds), default sshd 10:30:100. Contenders: proxmigrate at maxParallel 8 and 32,
migrateall at maxworkers 16 and 32; each with the modeled sshd (its default parameters, fitted
to real sshd) and with one real sshd per node on loopback (pvesim/openssh.py), on the real
clock (time scale 1). Prints drops and makespan per contender, real vs model; `make bench`
runs it (not `bench-quick`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.contenders import run_migrateall, run_proxmigrate
from bench.figures import RunFigures
from bench.scenarios import Scenario
from pvesim.model import Cluster
from pvesim.model.params import GiB
from pvesim.openssh_tools import OpenSshMissing, check_installed
from pvesim.realtime import RealTime

RUNS = (("proxmigrate", 8), ("proxmigrate", 32), ("migrateall", 16), ("migrateall", 32))
_open: list[RealTime] = []


def _small_guests(cluster: Cluster) -> None:
    for vm in cluster.vms.values():
        if vm.node == "pve1":
            vm.maxmem, vm.local_devices, vm.ha_state = GiB, [], None
            vm.mem = GiB // 4 if vm.running else 0
            vm.disks = [d for d in vm.disks if d.shared]


def _real(cluster: Cluster) -> None:
    _small_guests(cluster)
    _open.append(RealTime(cluster))


SHAPES = {"model": _small_guests, "real": _real}


def scenario(sshd: str) -> Scenario:
    """`sshd`: model or real."""
    return Scenario(
        f"{sshd}-sshd",
        "Drain 1 of 3 nodes: 40 small guests, sshd 10:30:100, real sshd vs model",
        nodes=3,
        vms_per_node=40,
        drained=("pve1",),
        shape=SHAPES[sshd],
    )


def run(contender: str, level: int, sshd: str, seed: int = 1) -> RunFigures:
    runner = run_proxmigrate if contender == "proxmigrate" else run_migrateall
    try:
        return runner(scenario(sshd), level, seed)
    finally:
        while _open:
            _open.pop().close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_sshd", description=__doc__)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    try:
        check_installed()
    except OpenSshMissing as exc:
        print(f"bench.real_sshd: skipped: {exc}", file=sys.stderr)
        return 0
    lines = [
        "| contender | level | SSH drops model / real | makespan (s) model / real "
        "| moved model / real |",
        "|---|---|---|---|---|",
    ]
    for contender, level in RUNS:
        runs = [run(contender, level, sshd) for sshd in SHAPES]
        drops = " / ".join(str(r.ssh_drops) for r in runs)
        makespans = " / ".join(f"{r.makespan:.0f}" for r in runs)
        moved = " / ".join(str(r.moved) for r in runs)
        lines.append(f"| {contender} | {level} | {drops} | {makespans} | {moved} |")
        print(lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "real-sshd.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
