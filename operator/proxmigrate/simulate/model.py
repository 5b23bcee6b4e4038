"""Building the model a simulated drain runs on."""

from __future__ import annotations

from typing import Any

from pvesim.model import Cluster, ModelParams, from_config

# pvesim's HA loops compute their next tick with a 1e-9 margin that epoch-sized clocks
# (1.7e9 s) lose to rounding, which can schedule a tick at the same instant forever; a small
# epoch keeps the margin meaningful. Only the task logs' dates change.
SIM_EPOCH = 86_400.0


def model_params(pve_version: int = 8) -> ModelParams:
    return ModelParams(pve_version=pve_version, start_time=SIM_EPOCH)


def cluster_from_config(config: dict[str, Any], seed: int) -> Cluster:
    """A model of the cluster described by a pvesim config (docs/pvesim.md)."""
    params = model_params(int(config.get("pve_version", 8)))
    return from_config(config, seed=seed, params=params)
