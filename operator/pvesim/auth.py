"""PVE authentication: API tokens and tickets (cookie + CSRF header on writes)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from pvesim.model import ApiError
from pvesim.model.access import ROOT_TOKEN

TOKEN_ID = ROOT_TOKEN
TICKET_LIFETIME = 7200.0  # PVE tickets are valid for 2 hours (pve-access-control)


@dataclass
class Credentials:
    token_secrets: dict[str, str]  # token id -> secret (a UUID, as `pveum user token add`)
    password: str
    key: bytes

    @classmethod
    def fresh(cls, token_ids: Iterable[str]) -> Credentials:
        return cls(
            token_secrets={token_id: str(uuid.uuid4()) for token_id in token_ids},
            password=secrets.token_urlsafe(12),
            key=secrets.token_bytes(32),
        )

    @property
    def token_secret(self) -> str:
        """The default root token's secret."""
        return self.token_secrets[TOKEN_ID]

    def check_token(self, value: str) -> str:
        """`PVEAPIToken=<id>=<secret>`'s value -> the token id (the request's user), or 401."""
        token_id, _, secret = value.partition("=")
        expected = self.token_secrets.get(token_id)
        if expected is None or not hmac.compare_digest(secret.strip(), expected):
            raise ApiError(401, "invalid token value!")
        return token_id

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
