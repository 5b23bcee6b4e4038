"""Operator-wide kopf settings, applied at start-up."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from proxmigrate.api.constants import FINALIZER
from proxmigrate.controllers.options import OPTIONS
from proxmigrate.controllers.wakeups import QuietWakeups

INSTANT_EXIT_SECONDS = 0.1  # kopf's docs: 0.001-0.1 s; more delays deletions it cannot wait on


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Our own Events (Started, Retrying, Failed...) are the audit trail; kopf's per-handler
    # chatter would drown them.
    settings.posting.level = logging.WARNING
    logging.getLogger("kopf.objects").addFilter(QuietWakeups())
    # Every watch ends after 50 s at the latest and is opened again, a connect hangs 10 s at
    # most, any other request 30 s: a connection silently dropped on the way to the API
    # server is noticed and replaced within a minute, with a log line.
    settings.watching.server_timeout = 50
    settings.watching.client_timeout = 60
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # A daemon told to stop (its object deleted) returns within a few awaits; kopf gives it
    # this long before it polls again only after the daemon's `cancellation_backoff`
    # (reconcile.STOP_GRACE_SECONDS), which would hold each deleted drain's finalizer 5 s.
    settings.background.instant_exit_timeout = INSTANT_EXIT_SECONDS
    settings.peering.mandatory = OPTIONS.peering_mandatory
    settings.peering.lifetime = OPTIONS.peering_lifetime_seconds
