"""What-if drains: proxmigrate's planner and engine run against pvesim's model on virtual time.

Shared by `proxmigrate simulate` and the benchmarks (bench/), so both predict with the code the
operator runs. Modules: `drain` (the library-mode loop, `LibraryDrain`), `outcome` (figures
from the simulator's ground truth), `bounds` (the bandwidth lower bound), `predict` (seeded
runs, paced and unpaced), `inventory` and `model` (building the model), `command` (the CLI).
See docs/simulate.md. Submodules are imported explicitly so `proxmigrate --help` stays fast.
"""
