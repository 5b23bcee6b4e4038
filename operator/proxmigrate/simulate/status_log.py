"""`StatusLog`: the VMMigration status writes of a library-mode drain, kept in memory.

`ClusterRuntime` reports everything it decides through `kube.patch_status`; recording those
patches (merged as the API server would) tells the drain each migration's phase without
reaching into the runtime.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from proxmigrate.api.enums import FINAL_MIGRATION_PHASES
from proxmigrate.status import migration as vmstatus


class StatusLog:
    """Stands in for `proxmigrate.kube.Kube`: the runtime only writes VMMigration statuses."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}  # name -> merged status
        self.requeued: Counter[str] = Counter()  # name -> times queued again after an attempt

    async def patch_status(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        current = self.statuses.get(name, {})
        if patch.get("phase") == "Queued" and current.get("attempts"):
            self.requeued[name] += 1
        self.statuses[name] = vmstatus.merged(current, patch)
        return {"status": self.statuses[name]}

    def phase(self, name: str) -> str | None:
        return self.statuses.get(name, {}).get("phase")

    def count(self, phase: str) -> int:
        return sum(1 for status in self.statuses.values() if status.get("phase") == phase)

    def all_final(self, names: list[str]) -> bool:
        return all(self.phase(name) in FINAL_MIGRATION_PHASES for name in names)
