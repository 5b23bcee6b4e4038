"""One rule of the failure classifiers: a PVE wording and the verdict it gives (pure).

Shared by pve/classifier.py (migration task logs, refused requests) and pve/ha_verdicts.py
(HA requests).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from proxmigrate.failures import Failure, FailurePhase, Reason

# A hibernated VM keeps `lock: suspended` until someone resumes it: waiting will not help.
PERSISTENT_LOCKS = frozenset({"suspended"})


@dataclass(frozen=True)
class Rule:
    """A wording of PVE's and the verdict it gives."""

    pattern: re.Pattern[str]
    reason: Reason
    transient: bool
    phase: FailurePhase | None = None  # None: infer from the progress lines before the match
    vm_moved: bool | None = None  # None: infer from the phase
    lock: str | None = None  # the lock this failure leaves, when the wording implies one
    after: re.Pattern[str] | None = None  # must match a line before the matching one

    def matches(self, lines: Sequence[str], index: int) -> bool:
        if not self.pattern.search(lines[index]):
            return False
        return self.after is None or any(self.after.search(line) for line in lines[:index])

    def verdict(self, line: str, phase: FailurePhase, moved: bool | None) -> Failure:
        match = self.pattern.search(line)
        lock = (match.groupdict().get("lock") if match else None) or self.lock
        transient = self.transient and lock not in PERSISTENT_LOCKS
        return Failure(self.reason, transient, phase, line, moved, lock)


def rule(
    pattern: str,
    reason: Reason,
    transient: bool,
    phase: FailurePhase | None = None,
    vm_moved: bool | None = None,
    lock: str | None = None,
    after: str | None = None,
) -> Rule:
    """A `Rule` from uncompiled patterns."""
    needs = re.compile(after) if after is not None else None
    return Rule(re.compile(pattern), reason, transient, phase, vm_moved, lock, needs)
