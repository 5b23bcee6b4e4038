"""kopf handlers. Importing this package registers them all."""

from proxmigrate.controllers import clusters, drains, migrations, placements, settings

__all__ = ["clusters", "drains", "migrations", "placements", "settings"]
