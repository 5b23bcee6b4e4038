"""proxmigrate: a Kubernetes operator for throttled, secure Proxmox VE live migrations."""

__version__ = "0.1.0"
