"""A migration the engine counts as running: what the scheduler and the link rules share."""

from __future__ import annotations

from dataclasses import dataclass

from proxmigrate.engine.jobs import Job


@dataclass
class Running:
    job: Job
    seq: int
    enqueued_at: float
    attempt: int
    started_at: float
    # the source's outflow as told by this stream's latest rate: that rate times the streams
    # then leaving the source, which share its link (bytes/s; see `links.outflow`)
    source_rate: float | None = None
    # that rate was at the stream's own cap: the link carries at least `source_rate`, maybe more
    capped: bool = False
    # its latest rate (bytes/s): the source's other streams' readings are judged against it
    rate: float | None = None
    # when it was read (the caller's clock; None if the caller gave no time)
    rate_at: float | None = None
    # bytes/s its guest re-dirties, (at least, at most) as its progress lines tell
    dirty_bounds: tuple[float, float] = (0.0, float("inf"))
    # its tunnel is up (`notify_tunnel_up`): it sends memory until its transfer ends
    tunnel_up: bool = False
    # its log showed the transfer ended (`notify_transfer_ended`): it sends no more memory
    transferred: bool = False
