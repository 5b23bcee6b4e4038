"""Following a drain: the progress line (a bar on a terminal, plain lines in a pipe), the wait
for its end with `--timeout`, and the wait for a dry run's plan."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from proxmigrate.api.enums import DrainPhase
from proxmigrate.api.timestamps import format_duration, parse_rfc3339
from proxmigrate.kubectl.errors import EXIT_TIMEOUT, PluginError
from proxmigrate.kubectl.tables import problem
from proxmigrate.planning.units import format_bytes
from proxmigrate.status.drain_return import ReturnCounts, status_return_counts

FINAL_PHASES = frozenset(
    {DrainPhase.DRAINED, DrainPhase.FAILED, DrainPhase.BLOCKED, DrainPhase.CANCELLED}
)
# With `maintenanceDone` the drain ends when its guests are home (Blocked: a spec refused)
RETURN_FINAL_PHASES = frozenset({DrainPhase.RETURNED, DrainPhase.BLOCKED})
POLL_SECONDS = 1.0
BAR_WIDTH = 24
# A pipe gets a new line when one of these changes.
SEEN_KEYS = (
    "phase",
    "total",
    "migrated",
    "failed",
    "skipped",
    "returned",
    "returnSkipped",
    "returnFailed",
)


def progress_bar(ratio: float, width: int = BAR_WIDTH) -> str:
    """`[#########---------------]`; the ratio is clamped to 0..1."""
    filled = round(max(0.0, min(1.0, ratio)) * width)
    return f"[{'#' * filled}{'-' * (width - filled)}]"


def throughput(status: Mapping[str, Any], now: datetime.datetime) -> float | None:
    """Bytes of guest memory moved per second since the drain started; None before."""
    started = status.get("startTime")
    moved = int(status.get("memoryBytesMigrated") or 0)
    if not started or moved <= 0:
        return None
    elapsed = (now - parse_rfc3339(started)).total_seconds()
    return moved / elapsed if elapsed > 0 else None


def render_progress(status: Mapping[str, Any], now: datetime.datetime) -> str:
    """One line: bar, VMs done/total, failures, throughput, ETA and phase; the return's
    figures once the drain sends its guests home."""
    counts = status_return_counts(status)
    if counts is not None:
        return render_return(status, counts)
    total = int(status.get("total") or 0)
    done = total - int(status.get("remaining") or 0) if total else 0
    parts = [
        progress_bar(float(status.get("progress") or 0.0)),
        f"{done}/{total} VMs",
        f"{int(status.get('migrated') or 0)} migrated",
        f"{int(status.get('failed') or 0)} failed",
    ]
    if status.get("skipped"):
        parts.append(f"{int(status['skipped'])} skipped")
    rate = throughput(status, now)
    if rate is not None:
        parts.append(f"{format_bytes(round(rate))}/s")
    if status.get("eta"):
        parts.append(f"ETA {status['eta']}")
    parts.append(str(status.get("phase") or "Pending"))
    return "  ".join(parts)


def render_return(status: Mapping[str, Any], counts: ReturnCounts) -> str:
    """The return home: bar and counts of the guests coming back (the operator's own
    `return_counts` over `status.vms`, as the drain's gauges), its ETA and phase. The
    drain's figures (all moved, 1.0) and throughput say nothing about the return."""
    ended = counts.returned + counts.skipped + counts.failed
    parts = [
        progress_bar(counts.progress),
        f"{ended}/{ended + counts.remaining} VMs home",
        f"{counts.returned} returned",
        f"{counts.failed} failed",
    ]
    if counts.skipped:
        parts.append(f"{counts.skipped} skipped")
    if status.get("eta"):
        parts.append(f"ETA {status['eta']}")
    parts.append(str(status["phase"]))
    return "  ".join(parts)


def drain_ended(body: Mapping[str, Any]) -> bool:
    """Whether the drain as asked now has ended: Drained (or Failed, Blocked, Cancelled)
    when no return is asked, Returned once `maintenanceDone` sends the guests home. A status
    written for an earlier spec does not count (observedGeneration): the Drained before
    `maintenanceDone` was set is not the end of the return it asks for."""
    status = body.get("status") or {}
    observed = status.get("observedGeneration")
    generation = (body.get("metadata") or {}).get("generation")
    if observed is not None and generation is not None and int(observed) < int(generation):
        return False
    return_asked = bool((body.get("spec") or {}).get("maintenanceDone"))
    return status.get("phase") in (RETURN_FINAL_PHASES if return_asked else FINAL_PHASES)


def follow_drain(
    read: Callable[[], Mapping[str, Any] | None],
    out: TextIO,
    *,
    live: bool,
    poll_seconds: float = POLL_SECONDS,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Show the drain's progress until it ends (`drain_ended`); returns the last status.

    `live` rewrites one line (a terminal); otherwise a line is printed whenever the counts
    or the phase change (not for every new throughput figure, which would flood a log).
    After `timeout` seconds: PluginError with EXIT_TIMEOUT (the drain keeps running).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last_seen: tuple[object, ...] = ()
    while True:
        body = read()
        if body is None:
            raise PluginError("the NodeDrain was deleted")
        status = dict(body.get("status") or {})
        line = render_progress(status, datetime.datetime.now(datetime.UTC))
        seen = tuple(status.get(key) for key in SEEN_KEYS)
        if live:
            out.write(f"\r{line}\033[K")
            out.flush()
        elif seen != last_seen:
            out.write(f"{line}\n")
        last_seen = seen
        if drain_ended(body):
            if live:
                out.write("\n")
            return status
        if deadline is not None and time.monotonic() >= deadline:
            if live:
                out.write("\n")
            raise PluginError(
                f"timed out after {format_duration(timeout or 0)} waiting for the drain to end "
                "(it keeps running)",
                EXIT_TIMEOUT,
            )
        time.sleep(poll_seconds)


def wait_plan(
    read: Callable[[], Mapping[str, Any] | None], timeout: float | None
) -> dict[str, Any]:
    """Wait for a dry run's plan; a drain Blocked without one (bad node) is an error."""
    timeout = 60.0 if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (read() or {}).get("status") or {}
        if status.get("plan"):
            return dict(status)
        if status.get("phase") == DrainPhase.BLOCKED:
            raise PluginError(problem(status) or "the plan could not be made")
        time.sleep(POLL_SECONDS / 2)
    raise PluginError(f"no plan after {timeout:.0f} s: is the operator running?", EXIT_TIMEOUT)
