"""Operator-wide kopf settings, applied at start-up."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from proxmigrate.controllers.options import OPTIONS

FINALIZER = "proxmigrate.dev/finalizer"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Our own Events (Started, Retrying, Failed...) are the audit trail; kopf's per-handler
    # chatter would drown them.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.mandatory = False
    settings.peering.lifetime = OPTIONS.peering_lifetime_seconds
