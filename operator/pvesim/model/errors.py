"""API errors as PVE reports them: an HTTP status, a message and optional per-parameter errors."""

from __future__ import annotations


class ApiError(Exception):
    """A refused API call; no task is created.

    docs/reference/proxmox.md#api-refusals-before-a-task-exists
    """

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors

    @classmethod
    def param(cls, errors: dict[str, str]) -> ApiError:
        """PVE's 400 `Parameter verification failed.` with `{"errors": {...}}`."""
        return cls(400, "Parameter verification failed.", errors)
