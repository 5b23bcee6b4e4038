"""Third-party balancers run unmodified against pvesim, for tests and benchmarks."""
