"""What-if drains: proxmigrate's planner and engine run against pvesim's model on virtual time.

Shared by `proxmigrate simulate` and the benchmarks (bench/), so both predict with the code the
operator runs. See docs/simulate.md.
"""

from proxmigrate.simulate.bounds import LowerBound, drain_lower_bound
from proxmigrate.simulate.drain import DrainOptions, DrainResult, LibraryDrain, Progress
from proxmigrate.simulate.inventory import config_from_inventory, inventory_from_model
from proxmigrate.simulate.outcome import DrainOutcome, TargetLoad, summarize

__all__ = [
    "DrainOptions",
    "DrainOutcome",
    "DrainResult",
    "LibraryDrain",
    "LowerBound",
    "Progress",
    "TargetLoad",
    "config_from_inventory",
    "drain_lower_bound",
    "inventory_from_model",
    "summarize",
]
