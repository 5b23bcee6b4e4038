"""`python -m bench [--quick]`: run the scenarios, print a Markdown table, write results and plots.

`make bench` also runs the operator overhead bench (`python -m bench.operator`) unless
`--no-operator` is given, and the real-sshd scenario (`python -m bench.real_sshd`) unless
`--no-real-sshd`; `--quick` (CI) runs neither.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.report import inventory_costs, table
from bench.scenarios import ONE_NODE
from bench.suite import run_all, suite

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI subset (under 3 minutes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--no-proxlb", action="store_true", help="skip the ProxLB contender")
    parser.add_argument(
        "--no-operator", action="store_true", help="skip the operator overhead bench"
    )
    parser.add_argument(
        "--no-real-sshd", action="store_true", help="skip the real-sshd scenario (bench.real_sshd)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    runs, notes = run_all(suite(args.quick, with_proxlb=not args.no_proxlb))
    elapsed = time.monotonic() - began
    markdown = "\n".join(
        [
            f"Command: `python -m bench{' --quick' if args.quick else ''}` "
            f"on {platform.node()} ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}; library runs took {elapsed:.0f} s.",
            "",
            table(runs),
            "",
            "Inventory path (proxmigrate):",
            *(f"- {line}" for line in inventory_costs(runs)),
            *(["", "Notes:", *(f"- {note}" for note in notes)] if notes else []),
        ]
    )
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    (args.out / "runs.json").write_text(json.dumps([asdict(run) for run in runs], indent=1) + "\n")
    from bench import plots  # after the runs: matplotlib would inflate their peak RSS

    for name in sorted({run.scenario for run in runs}):
        plots.makespan_vs_concurrency(runs, name, args.out / f"{name}-makespan.png")
    first_seed = [r for r in runs if r.scenario == ONE_NODE.name and r.seed == 1]
    picks = [r for r in first_seed if (r.contender, r.level) in _INFLIGHT_PICKS]
    plots.inflight_over_time(
        picks, args.out / f"{ONE_NODE.name}-inflight.png", f"{ONE_NODE.name}: in flight (seed 1)"
    )
    if not (args.quick or args.no_real_sshd):  # real sshd beside the model: real minutes
        subprocess.call([sys.executable, "-m", "bench.real_sshd", "--out", str(args.out)])
    if not (args.quick or args.no_operator):
        return subprocess.call([sys.executable, "-m", "bench.operator", "--out", str(args.out)])
    return 0


_INFLIGHT_PICKS = {("proxmigrate", 8), ("proxmigrate", 32), ("migrateall", 8), ("proxlb", 8)}


if __name__ == "__main__":
    sys.exit(main())
