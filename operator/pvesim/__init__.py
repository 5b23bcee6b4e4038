"""pvesim: a Proxmox VE API simulator with a live-migration model."""
