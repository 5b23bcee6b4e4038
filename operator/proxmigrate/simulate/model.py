"""Building the model a simulated drain runs on."""

from __future__ import annotations

from typing import Any

from pvesim.model import Cluster, ModelParams, from_config


def model_params(pve_version: int = 8) -> ModelParams:
    return ModelParams(pve_version=pve_version)


def cluster_from_config(config: dict[str, Any], seed: int) -> Cluster:
    """A model of the cluster described by a pvesim config (docs/pvesim.md)."""
    params = model_params(int(config.get("pve_version", 8)))
    return from_config(config, seed=seed, params=params)
