"""Nodes and VMs as the model tracks them."""

from __future__ import annotations

from dataclasses import dataclass, field

from pvesim.model.sshd import Sshd


@dataclass
class Disk:
    """One VM volume; `shared` storage needs no copy on migration."""

    key: str  # config key: `scsi0`, `ide2` (a CD-ROM), `unused0` (detached), `tpmstate0`
    storage: str
    size: int  # bytes
    shared: bool
    volname: str = ""  # e.g. `vm-100-disk-0`, `iso/debian.iso`; the key when not given
    cdrom: bool = False  # `media=cdrom` (an ISO image, or a cloud-init drive)

    @property
    def volid(self) -> str:
        return f"{self.storage}:{self.volname or self.key}"

    @property
    def unused(self) -> bool:
        """Detached but kept (`unusedN`): PVE still copies it on migration."""
        return self.key.startswith("unused")

    def config_value(self) -> str:
        """The drive as the VM config writes it (qemu-server `print_drive`)."""
        if self.unused:
            return self.volid
        if self.cdrom:
            return f"{self.volid},media=cdrom"
        return f"{self.volid},size={self.size >> 30}G"


@dataclass(eq=False)
class Node:
    name: str
    index: int  # 1-based, gives the node its IPs
    maxmem: int
    cpus: int
    sshd: Sshd
    nic_gbit: float
    online: bool = True
    storages: tuple[str, ...] = ("local", "local-lvm", "ceph")
    port_reserved_until: dict[int, float] = field(default_factory=dict)  # pve-reserved-ports
    ports_listening: set[int] = field(default_factory=set)
    next_pid: int = 0x1000
    pstart: int = 0x4000

    @property
    def ip(self) -> str:
        return f"10.0.0.{self.index}"

    @property
    def migration_ip(self) -> str:
        return f"10.1.0.{self.index}"

    def allocate_pid(self) -> int:
        self.next_pid += 1
        return self.next_pid


@dataclass(eq=False)
class VM:
    vmid: int
    name: str
    node: str
    maxmem: int  # bytes, `memory` in the config
    mem: int  # bytes in use: what a live migration must copy at least
    cpus: int = 1
    running: bool = True
    template: bool = False
    dirty_rate: float = 0.0  # bytes/s the guest re-dirties while it is copied
    disks: list[Disk] = field(default_factory=list)
    local_devices: list[str] = field(default_factory=list)  # e.g. `hostpci0`
    tags: list[str] = field(default_factory=list)
    pool: str | None = None
    ha_state: str | None = None  # HA resources.cfg `state` (started, ignored, ...); None: none
    lock: str | None = None
    migrating: bool = False  # holds the per-VM migration file lock (guest_migration_lock)
    cpu_load: float = 0.0  # share of its CPUs in use

    @property
    def ha_managed(self) -> bool:
        """pve-ha-manager HA/Config.pm vm_is_ha_managed: an `ignored` resource is not."""
        return self.ha_state not in (None, "ignored")

    @property
    def local_disks(self) -> list[Disk]:
        return [d for d in self.disks if not d.shared]

    def config(self) -> dict[str, object]:
        """The VM's config as `GET .../config` shows it."""
        conf: dict[str, object] = {
            "name": self.name,
            "memory": str(self.maxmem >> 20),
            "cores": self.cpus,
            "sockets": 1,
            "ostype": "l26",
            "digest": f"{self.vmid:040x}",
        }
        for disk in self.disks:
            conf[disk.key] = disk.config_value()
        for dev in self.local_devices:
            conf[dev] = "0000:01:00.0"
        if self.tags:
            conf["tags"] = ";".join(self.tags)
        if self.template:
            conf["template"] = 1
        if self.lock:
            conf["lock"] = self.lock
        return conf
