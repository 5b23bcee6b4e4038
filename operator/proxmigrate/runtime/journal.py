"""VMMigration status writes: recorded on the attempt first, kept until the API server has them.

The operator writes before it acts (the intent before the POST), so a restarted operator
resumes instead of repeating. A write that must precede an action (`required`) raises when
it fails and changes nothing. Any other change is merged into the attempt's copy at once
and kept as its `unwritten` patch until the API server confirms it: a failed write is
logged and retried by every tick (`flush`), so bookkeeping goes on and nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from proxmigrate.api.constants import VMMIGRATIONS
from proxmigrate.api.enums import MigrationPhase
from proxmigrate.runtime.attempt import Attempt, Attempts, AttemptState
from proxmigrate.status.migration import merged

log = logging.getLogger(__name__)


class StatusWriter(Protocol):
    """Where VMMigration status goes: the API server (`proxmigrate.kube.Kube`), or a log of
    the documents in library mode."""

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...


@dataclass
class Journal:
    kube: StatusWriter
    attempts: Attempts
    clock: Callable[[], float]

    async def write(
        self, attempt: Attempt, patch: dict[str, Any], *, required: bool = False
    ) -> dict[str, Any] | None:
        """Persist a status change (with any earlier one the API server has not confirmed);
        None when the VMMigration no longer exists. See the module docstring."""
        pending = {**(attempt.unwritten or {}), **patch}
        if required:  # never a final status
            answer = await self._send(attempt, pending)
            attempt.status = merged(attempt.status, patch)
            attempt.unwritten = None
            return answer
        attempt.status = merged(attempt.status, patch)
        attempt.unwritten = pending
        try:
            return await self._confirm(attempt, pending)
        except Exception as error:
            log.warning("%s: status write failed, kept to retry: %s", attempt.key, error)
            return {"status": attempt.status}  # exists, as far as we know

    async def flush(self) -> None:
        """Write the status changes the API server refused earlier; raises while it still
        refuses (the loop backs off). One being written now is left to that write."""
        for attempt in self.attempts:
            if attempt.unwritten is not None and not attempt.writing:
                await self._confirm(attempt, attempt.unwritten)
                log.info("%s: status written after an earlier failure", attempt.key)

    async def _confirm(self, attempt: Attempt, pending: dict[str, Any]) -> dict[str, Any] | None:
        """Send the pending patch; once the API server has it, forget it unless a newer
        change was merged meanwhile. An ended attempt is remembered (its final status) or
        let go (anything else) then."""
        attempt.writing += 1
        try:
            answer = await self._send(attempt, pending)
        finally:
            attempt.writing -= 1
        if attempt.unwritten is not pending:
            return answer
        attempt.unwritten = None
        if attempt.state is AttemptState.ENDED:
            if MigrationPhase(attempt.status.get("phase") or "Pending").is_final:
                attempt.ended_at = self.clock()
                attempt.status = {}
            else:
                self.attempts.drop(attempt)
        return answer

    async def _send(self, attempt: Attempt, patch: dict[str, Any]) -> dict[str, Any] | None:
        request = attempt.request
        return await self.kube.patch_status(VMMIGRATIONS, request.namespace, request.name, patch)
