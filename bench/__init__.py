"""Benchmarks: proxmigrate's drains against PVE's migrateall, ProxLB and the bandwidth bound.

`python -m bench` (full set) or `python -m bench --quick` (CI); `python -m bench.operator` for
the operator's own overhead. Results go to bench/out/; bench/RESULTS.md reads one run.
"""
