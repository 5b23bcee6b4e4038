"""PVE authentication: API tokens and tickets (cookie + CSRF header on writes)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from pvesim.model import ApiError

TOKEN_ID = "root@pam!pvesim"
TICKET_LIFETIME = 7200.0  # PVE tickets are valid for 2 hours (pve-access-control)


@dataclass
class Credentials:
    token_secret: str
    password: str
    key: bytes

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(
            token_secret=str(uuid.uuid4()),
            password=secrets.token_urlsafe(12),
            key=secrets.token_bytes(32),
        )

    def ticket(self, user: str, issued: float, epoch: int) -> str:
        body = f"PVE:{user}:{int(issued):08X}:{epoch}"
        return f"{body}::{self._sign(body)}"

    def csrf(self, user: str, issued: float) -> str:
        stamp = f"{int(issued):08X}"
        return f"{stamp}:{self._sign(f'{stamp}:{user}')[:43]}"

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def check_ticket(self, ticket: str, now: float, epoch: int) -> str:
        """Return the ticket's user or raise 401 as pveproxy does."""
        body, _, sig = ticket.partition("::")
        parts = body.split(":")
        if len(parts) != 4 or not hmac.compare_digest(sig, self._sign(body)):
            raise ApiError(401, "invalid PVE ticket")
        _, user, issued_hex, ticket_epoch = parts
        if int(ticket_epoch) != epoch or now - int(issued_hex, 16) > TICKET_LIFETIME:
            raise ApiError(401, "invalid PVE ticket")
        return user

    def check_csrf(self, token: str | None, user: str) -> None:
        try:
            issued = int((token or "").partition(":")[0], 16)
        except ValueError:
            issued = -1
        if issued < 0 or not hmac.compare_digest(str(token), self.csrf(user, issued)):
            raise ApiError(401, "Permission denied - invalid csrf token")
