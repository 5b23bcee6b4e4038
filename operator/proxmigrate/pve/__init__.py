"""The Proxmox VE adapter: API client (sync and async), task tracking, failure classifier."""

from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.classifier import classify, classify_api_error
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveError, PveTLSError, PveUnreachable
from proxmigrate.pve.precondition import MigrationPrecondition
from proxmigrate.pve.resources import MigrationSettings
from proxmigrate.pve.transport import PasswordAuth, RequestRetry, TokenAuth

__all__ = [
    "AsyncPveClient",
    "MigrationPrecondition",
    "MigrationSettings",
    "PasswordAuth",
    "PveApiError",
    "PveAuthError",
    "PveClient",
    "PveError",
    "PveTLSError",
    "PveUnreachable",
    "RequestRetry",
    "TokenAuth",
    "classify",
    "classify_api_error",
]
