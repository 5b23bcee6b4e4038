"""kopf handlers. Importing this package registers them all."""

from proxmigrate.controllers import clusters, migrations, settings

__all__ = ["clusters", "migrations", "settings"]
