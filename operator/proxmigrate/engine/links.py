"""The links' rules (7 and 8): what the streams' rates told of each source's and target's
link, and whether one more stream leaves every stream on them a converging share."""

from __future__ import annotations

from collections.abc import Sequence

from proxmigrate.engine.jobs import Job
from proxmigrate.engine.policy import EnginePolicy
from proxmigrate.engine.running import Running

# A rate within this share of the source's highest is that source's top rate (`_learn`).
TOP_RATE_SHARE = 0.99
# A rate read longer than this before another's tells that the other is held (`_learn`)
# only when the other is below STALE_HELD_SHARE of it: read at another moment, it may
# differ that much on a link the source's streams share alike.
FRESH_RATE_SECONDS = 1.0
STALE_HELD_SHARE = 0.5
# The least told on the way to one target below this share of the source's link (as
# declared, or as its top streams to another target told it) is that target's (`allows`).
HELD_TARGET_SHARE = 0.75


class LinkBounds:
    """The links as the running streams told them; a link outlives its streams."""

    def __init__(self) -> None:
        # each source's outflow as last told while streams ran
        self._outflow: dict[str, float] = {}
        # the least outflow a source's top stream to each target told (`_learn`)
        self._least_told: dict[tuple[str, str], float] = {}
        # the least ingress a target's streams held by it told (`_learn`)
        self._least_ingress: dict[str, float] = {}

    def observe(
        self,
        running: Running,
        rate: float,
        migrations: Sequence[Running],
        policy: EnginePolicy,
        now: float | None = None,
    ) -> None:
        """`running`'s latest rate (bytes/s), read at `now`, among all `migrations` now
        running: times the streams leaving its source now, it tells that link's outflow."""
        source = running.job.source
        running.tunnel_up = True  # a rate: its memory is under way
        capped = policy.capped_stream_rate
        running.capped = capped is not None and rate >= capped
        streams = [r for r in migrations if r.job.source == source]
        sharing = len(streams)
        if running.capped:  # the link carries what the streams sending now send
            sharing = sum(1 for r in streams if r.tunnel_up and not r.transferred)
        running.source_rate = rate * max(1, sharing)
        self._learn(running, rate, streams, migrations, now, policy.declared_link(source))
        running.rate, running.rate_at = rate, now
        told = outflow(streams)
        if told is not None:
            self._outflow[source] = told

    def forget(self) -> None:
        """No migration runs: what the links told holds for a busy spell, not for ever
        (other traffic may have shared them, and the next drain learns them again)."""
        self._least_told.clear()
        self._least_ingress.clear()

    def _learn(
        self,
        running: Running,
        rate: float,
        streams: list[Running],
        migrations: Sequence[Running],
        now: float | None,
        declared: float | None,
    ) -> None:
        """Keep the least outflow told by a stream at its source's top rate, per target,
        and the least ingress told by a stream held below it, per target.

        A rate times the migrations leaving the source overstates the link whenever some
        of them are in a start or end phase (they send nothing), and the streams running
        now told it at other moments: up to twice the link in bench runs, so rules 7 and 8
        let 10-11 streams share a 10 Gbit/s link and a guest dirtying 120 MiB/s fell below
        its share. A link does not change, and with all of them sending the count is
        right: the least such told is the tightest bound. It counts only from a stream
        whose rate no other stream of the source beats and that does not run alone there
        (its rate may be its target's), and only for jobs to the same target: a slower
        target's streams, all held by it, do not shrink the link the faster targets'
        streams share.

        A stream slower than another of its source is held elsewhere, by its target (its
        source shares fairly): its rate times the migrations into that target tells the
        target's ingress, which rules 7 and 8 then keep as they keep a source's link. A
        guest dirtying 120 MiB/s otherwise went to a 5 Gbit/s target with four others.
        A rate read more than FRESH_RATE_SECONDS before `now` tells so only when it is far
        faster (STALE_HELD_SHARE): read at another moment (a burst of starts, an end
        unseen), it flagged streams of a source-bound link as held, and the ingress so
        learned cost drain-1of4 8 s and drain-write-heavy 14 s. Nor is a stream held whose
        rate, times the streams leaving its source, is the source's link as its top streams
        told it (`_source_link`): it has its share there. Rates read when fewer streams
        shared the link are more than twice as fast: a 10 Gbit/s target was so learned as
        374 MiB/s for the rest of a drain, whose tail into it, small guests no log read
        measures, then ran two streams at a time (drain-1of4 up to 335 s, not 303).
        """
        if running.capped or running.source_rate is None:
            return
        sending = [r for r in streams if not r.transferred]
        if len(sending) < 2:
            return
        rivals = [r for r in sending if r is not running and r.rate is not None and not r.capped]
        target = running.job.target
        if all(rate >= TOP_RATE_SHARE * r.rate for r in rivals if r.rate is not None):
            key = (running.job.source, target)
            told = running.source_rate
            self._least_told[key] = min(self._least_told.get(key, told), told)
            return
        if now is not None and not any(_held_by_target(rate, r, now) for r in rivals):
            return  # only readings of other moments beat it, and not by much
        if rate * len(sending) >= TOP_RATE_SHARE * self._source_link(running.job.source, declared):
            return  # its share of its source's link: the source holds it, not its target
        into = [r for r in migrations if r.job.target == target and not r.transferred]
        if len(into) >= 2:
            told = rate * len(into)
            self._least_ingress[target] = min(self._least_ingress.get(target, told), told)

    def _source_link(self, source: str, declared: float | None) -> float:
        """`source`'s link as declared or as the most its top streams to any target told
        (`_least_told`); infinite while neither is known."""
        told = [link for (node, _), link in self._least_told.items() if node == source]
        if declared is not None:
            told.append(declared)
        return max(told, default=float("inf"))

    def allows(self, job: Job, migrations: Sequence[Running], policy: EnginePolicy) -> bool:
        """One more stream from `job.source` would still leave each at `min_stream_rate`
        (and into `job.target` too, when its ingress was learned from streams it held),
        and every stream on the source's link (and the target's, if declared or learned) at
        `convergence_margin` times its guest's dirty rate.

        A migration whose log showed its transfer ended is off its links (`transferred`):
        its end phase (`rm -f`, `qm unlock`) sends no memory, and counted as a stream it
        kept a small guest from starting behind it for the whole phase.

        The source's outflow is what its streams' rates tell (`outflow`), at most the
        least told on the way to `job.target` while all sent (`_learn`), unless that is
        far below the source's link (HELD_TARGET_SHARE): then it is the target's ingress,
        and a slow target's streams no longer keep every job to it below the floor of a
        source with room for it (drain-25g-into-5g -60 s, seeds 1-10); with no
        stream measured now, the outflow last told stands in; before any, a declared
        capacity.
        Convergence takes the larger of that and the declared capacity (else
        `cold_link_capacity`): a declared link is not shrunk by rates of capped streams.
        """
        streams = [r for r in migrations if r.job.source == job.source and not r.transferred]
        told = outflow(streams)
        declared = policy.declared_link(job.source)
        least = self._least_told.get((job.source, job.target))
        held = least is not None and least < HELD_TARGET_SHARE * self._source_link(
            job.source, declared
        )
        if least is not None and not held:
            told = least if told is None else min(told, least)
        capacity = (
            told
            if told is not None
            else self._outflow.get(job.source, policy.declared_link(job.source))
        )
        if awaiting_rates(streams, policy):
            return False  # grow further once the link's rates are seen
        floor = policy.min_stream_rate
        if floor is not None and capacity is not None:
            crowded = len(streams) >= policy.min_streams_per_source
            if crowded and capacity / (len(streams) + 1) < floor:
                return False
        link = max(capacity or 0.0, declared or policy.cold_link_capacity)
        if not _converges(job, streams, link, policy):
            return False
        into_target = [r for r in migrations if r.job.target == job.target and not r.transferred]
        ingress = policy.declared_link(job.target)
        learned = [self._least_ingress.get(job.target), least if held else None]
        if ingress is None and any(learned):
            ingress = min(bound for bound in learned if bound is not None)
            crowded = len(into_target) >= policy.min_streams_per_source
            if floor is not None and crowded and ingress / (len(into_target) + 1) < floor:
                return False
        return ingress is None or _converges(job, into_target, ingress, policy)


def awaiting_rates(streams: Sequence[Running], policy: EnginePolicy) -> bool:
    """The `streams` leaving one source (transfer not ended) hold its next start until
    more of their rates are seen: `unmeasured_streams_per_source` of them have none (rule 7)."""
    if policy.min_stream_rate is None or len(streams) < policy.min_streams_per_source:
        return False
    unmeasured = sum(1 for r in streams if r.source_rate is None)
    return unmeasured >= policy.unmeasured_streams_per_source


def _held_by_target(rate: float, rival: Running, now: float) -> bool:
    """A stream read at `rate` at `now` is held below `rival` (by its target): beaten by a
    rate read at about the same time, or by far by one read at another moment."""
    if rival.rate is None:
        return False
    fresh = rival.rate_at is not None and now - rival.rate_at <= FRESH_RATE_SECONDS
    return rate < (TOP_RATE_SHARE if fresh else STALE_HELD_SHARE) * rival.rate


def outflow(streams: list[Running]) -> float | None:
    """A source's outflow as its streams' rates tell it; None if none was measured.

    A rate below the stream cap was set by the link: times the streams then leaving the
    source it tells the outflow, and the least of these counts (streams in their start or
    end phase send no memory, so the others overstate the link; the least overstates it
    least; rates seen when fewer streams ran are scaled by that count, not by today's).
    A rate at the cap (`capped_stream_rate`: one ssh/sshd pair's cipher) was not set by
    the link, which carries at least that rate times the streams sending then (tunnel up,
    transfer not ended: counting those still logging in read 1 GiB/s as 5 on a 10 Gbit/s
    link): such readings count only while no stream is below the cap, and then the most
    told, so a fast link is learned as its capped streams add up instead of being read as
    one stream's cipher speed.
    """
    limited = [r.source_rate for r in streams if r.source_rate is not None and not r.capped]
    if limited:
        return min(limited)
    bounds = [r.source_rate for r in streams if r.source_rate is not None and r.capped]
    return max(bounds) if bounds else None


def _converges(job: Job, sharing: list[Running], capacity: float, policy: EnginePolicy) -> bool:
    """`job` joining the streams `sharing` a link of `capacity` leaves each of them,
    and itself, a share of at least `convergence_margin` times its guest's dirty rate.
    A lone stream is never held back: the link is all it can get."""
    margin = policy.convergence_margin
    if margin is None or not sharing:
        return True
    need = margin * max(_dirty(job, None, policy), *(_dirty(r.job, r, policy) for r in sharing))
    return capacity / (len(sharing) + 1) >= need


def _dirty(job: Job, running: Running | None, policy: EnginePolicy) -> float:
    """A guest's dirty rate: guessed from its size, within what its progress lines told."""
    guess = max(policy.assumed_dirty_floor, job.memory_bytes * policy.assumed_dirty_share)
    if running is None:
        return guess
    at_least, at_most = running.dirty_bounds
    return min(max(guess, at_least), at_most)
