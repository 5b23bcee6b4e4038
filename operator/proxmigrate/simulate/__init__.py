"""What-if drains: proxmigrate's planner and engine run against pvesim's model on virtual time.

Shared by `proxmigrate simulate` and the benchmarks (bench/), so both predict with the code the
operator runs. Modules: `drain` (`LibraryDrain`: the planner, then the operator's
`ClusterRuntime` ticked on virtual time), `model_client` (the operator's PVE client answered
by the model in-process), `status_log` (the runtime's status writes, in memory), `outcome`
(figures from the simulator's ground truth), `bounds` (the bandwidth lower bound), `predict`
(seeded runs, paced and unpaced), `inventory` and `model` (building the model), `command`
(the CLI).
See docs/simulate.md. Submodules are imported explicitly so `proxmigrate --help` stays fast.
"""
