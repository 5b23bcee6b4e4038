"""kopf handlers. Importing this package registers them all."""

from proxmigrate.controllers import (
    cache,
    clusters,
    drains,
    maintenances,
    migrations,
    placements,
    settings,
    wakeups,
)

__all__ = [
    "cache",
    "clusters",
    "drains",
    "maintenances",
    "migrations",
    "placements",
    "settings",
    "wakeups",
]
