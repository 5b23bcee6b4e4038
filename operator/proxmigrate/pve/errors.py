"""Typed failures of the PVE API client, so controllers can name the cause in a condition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PveError(Exception):
    """Base of every error the PVE adapter raises."""


class PveAuthError(PveError):
    """The credentials were rejected (bad token id/secret, wrong password, expired ticket)."""


class PveUnreachable(PveError):
    """No endpoint answered.

    `request_may_have_arrived` is True when a non-idempotent request (a migration POST) was
    sent but its answer was lost: the caller must look for the task before issuing it again.
    """

    def __init__(self, message: str, *, request_may_have_arrived: bool = False) -> None:
        super().__init__(message)
        self.request_may_have_arrived = request_may_have_arrived


class PveTLSError(PveUnreachable):
    """The TLS handshake failed: certificate not trusted, wrong host name, or no TLS at all."""


class PveApiError(PveError):
    """PVE answered with an HTTP error: `message` is its reason, `errors` its per-parameter map."""

    def __init__(self, status: int, message: str, errors: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.message = message
        self.errors: dict[str, Any] = dict(errors or {})
        detail = "; ".join(f"{key}: {value}" for key, value in self.errors.items())
        super().__init__(f"PVE API error {status}: {message}" + (f" ({detail})" if detail else ""))

    @property
    def text(self) -> str:
        """The reason and every parameter error as one string, for the classifier."""
        return " ".join([self.message, *(str(value) for value in self.errors.values())])
