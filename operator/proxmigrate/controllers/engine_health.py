"""Is a cluster's engine loop working: the Ready reason the daemon reports, and `/healthz`.

The cluster daemon (controllers/clusters.py) restarts a loop that ended and reports why;
the probe has Kubernetes restart a process whose loop hangs, which no restart from inside
would cure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from proxmigrate.controllers.registry import registry_of
from proxmigrate.runtime.cluster import ClusterRuntime

log = logging.getLogger(__name__)
# An engine loop that has not completed a tick for this long is stalled: Ready False, and
# `/healthz` fails so that Kubernetes restarts the process. Ticks come every poll (2 s) and
# every Kubernetes and PVE call has a timeout, so only a hang gets here.
ENGINE_STALL_SECONDS = 60.0
ENGINE_FAILING_TICKS = 3  # this many failed ticks in a row make the cluster not Ready


def engine_trouble(runtime: ClusterRuntime, loop: asyncio.Task[None]) -> tuple[str, str] | None:
    """Why the engine does not work now (a Ready reason and message), or None."""
    if loop.done():
        error = None if loop.cancelled() else loop.exception()
        log.error("cluster %s: the engine loop stopped (%r); restarting it", runtime.label, error)
        return "EngineStopped", f"the migration engine stopped ({error!r}); restarted"
    silent = time.monotonic() - runtime.heartbeat
    if silent > ENGINE_STALL_SECONDS:
        return "EngineStalled", f"no engine tick completed for {silent:.0f} s"
    if runtime.failed_ticks >= ENGINE_FAILING_TICKS:
        return "EngineFailing", f"{runtime.failed_ticks} ticks failed: {runtime.loop_error}"
    return None


@kopf.on.probe(id="engines")
def engines_alive(memo: Any, **_: Any) -> dict[str, float]:
    """`/healthz`: fails (HTTP 500) while any engine loop has not completed a tick for
    ENGINE_STALL_SECONDS (hung on a call, or stopped); else seconds since each one's tick."""
    now = time.monotonic()
    runtimes = list(registry_of(memo).runtimes.values())
    silent = {rt.label: round(now - rt.heartbeat, 1) for rt in runtimes}
    stalled = {label: age for label, age in silent.items() if age > ENGINE_STALL_SECONDS}
    if stalled:
        raise kopf.PermanentError(f"engine loops stalled (seconds without a tick): {stalled}")
    return silent
