"""Which guests a request names, and which anti-affinity groups a guest belongs to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxmigrate.inventory import VMInfo

# PVE tags may only hold `[a-z0-9_][a-z0-9_-+.]*` (case-insensitive), so a `:` separator could
# never appear in a real tag (pve-common:src/PVE/JSONSchema.pm::pve_verify_tag, `$PVE_TAG_RE`).
DEFAULT_ANTI_AFFINITY_PREFIX = "anti-affinity_"


def fold_tags(tags: Iterable[str]) -> frozenset[str]:
    """Tags compared case-insensitively, as PVE's default tag handling does."""
    return frozenset(tag.casefold() for tag in tags)


@dataclass(frozen=True)
class VMSelector:
    """A union of vmids, tags and pools, minus exclusions; no include list selects every VM."""

    vmids: frozenset[int] = frozenset()
    tags: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()
    exclude_vmids: frozenset[int] = frozenset()
    exclude_tags: frozenset[str] = frozenset()

    @property
    def selects_all(self) -> bool:
        return not (self.vmids or self.tags or self.pools)

    def rejection(self, vm: VMInfo) -> str | None:
        """Why `vm` is not selected, or None when it is."""
        vm_tags = fold_tags(vm.tags)
        if vm.vmid in self.exclude_vmids:
            return "excluded by vmSelector (vmid)"
        excluded_by = sorted(vm_tags & fold_tags(self.exclude_tags))
        if excluded_by:
            return f"excluded by vmSelector (tag {excluded_by[0]})"
        if self.selects_all:
            return None
        included = (
            vm.vmid in self.vmids
            or bool(vm_tags & fold_tags(self.tags))
            or (vm.pool is not None and vm.pool in self.pools)
        )
        return None if included else "not matched by vmSelector"

    def matches(self, vm: VMInfo) -> bool:
        return self.rejection(vm) is None


def anti_affinity_groups(vm: VMInfo, prefix: str) -> frozenset[str]:
    """The groups named by `vm`'s tags that start with `prefix` (an empty prefix disables)."""
    if not prefix:
        return frozenset()
    folded_prefix = prefix.casefold()
    return frozenset(
        tag[len(folded_prefix) :]
        for tag in fold_tags(vm.tags)
        if tag.startswith(folded_prefix) and len(tag) > len(folded_prefix)
    )
