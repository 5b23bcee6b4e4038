"""The pure migration model; see docs/pvesim.md."""

from pvesim.model.build import from_config, generate
from pvesim.model.cluster import ROOT, Cluster
from pvesim.model.datacenter import Datacenter
from pvesim.model.entities import VM, Disk, Node
from pvesim.model.errors import ApiError
from pvesim.model.migration import MigrationRecord, MigrationRequest
from pvesim.model.params import MaxStartups, ModelParams, NetworkParams, SshdParams, TimingParams
from pvesim.model.sshd import drop_probability, should_drop

__all__ = [
    "ROOT",
    "VM",
    "ApiError",
    "Cluster",
    "Datacenter",
    "Disk",
    "MaxStartups",
    "MigrationRecord",
    "MigrationRequest",
    "ModelParams",
    "NetworkParams",
    "Node",
    "SshdParams",
    "TimingParams",
    "drop_probability",
    "from_config",
    "generate",
    "should_drop",
]
