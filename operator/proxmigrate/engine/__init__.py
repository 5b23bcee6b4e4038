"""The migration engine: which queued migrations may start now. Pure: no I/O, no clock.

Every call that depends on time takes `now` (seconds, any epoch, never decreasing); jitter
comes from an injected `random.Random`. `mypy --strict` clean.

API
---
`EnginePolicy(max_parallel=8, max_parallel_per_target=None, max_parallel_per_source=None,
ssh_max_startups=MaxStartups(10, 30, 100), handshake_safety=0.5, handshake_seconds=0.25,
start_spread_seconds=5.0, end_spread_seconds=2.0, aimd_increase_every=5,
priority_aging_seconds=600.0, retry=RetryPolicy(max_attempts=5, backoff_base=5.0,
backoff_max=300.0, jitter=0.2), min_stream_rate=128 MiB/s, min_streams_per_source=2,
unmeasured_streams_per_source=8, capped_stream_rate=768 MiB/s, convergence_margin=2.0,
assumed_dirty_share=1/128, assumed_dirty_floor=16 MiB/s, cold_link_capacity=link_payload(1.0),
node_link_capacity=())`;
`MaxStartups.parse("10:30:100")`; `link_payload(gbit)`: a link's TCP payload bytes/s.

`MigrationEngine(policy, rng=None)`:
- `submit(job, now)`: queue a `Job(key, vmid, source, target, priority=0, memory_bytes=0)`;
  idempotent by key (a queued key takes the new fields, e.g. priority, and keeps its place).
- `cancel(key) -> bool`: drop a queued job (True if it was queued); running ones are untouched.
- `adopt_running(job, started_at, attempt=1)`: after an operator restart, a migration found
  running counts against caps and pacing.
- `poll(now) -> list[Job]`: jobs to start now; the engine counts them running from `now`.
- `notify_tunnel_up(key, now, start_phase=None)` (optional): log shows `ssh tunnel ver 1`,
  start phase over (it took `start_phase` s); `notify_tunnel_pending(key, now)`: not yet.
- `observe_rate(key, bytes_per_second, dirty_bounds=None, now=None)`: a progress line's
  rate, what it tells of the guest's dirty rate (at least, at most), and when it was read,
  for rules 7 and 8.
- `notify_ending(key, now)`: log shows the transfer ending; holds the end-phase slot until
  `end_spread_seconds + handshake_seconds` after the latest call (call it on every task poll
  while the end is near) or `finish`. A prediction: the migration stays on its links.
- `notify_transfer_ended(key)`: log shows `migration status: completed`; the migration no
  longer counts on its links (rules 7, 8).
- `awaits_rate(key) -> bool`: its source's next start waits for this migration's first
  rate (rule 7: `unmeasured_streams_per_source` of its streams have none, a job of the
  source is queued, the cluster cap does not hold): its log is worth reading now.
- `awaits_end(key, now) -> bool`: a queued job past its backoff may wait for what this
  migration's end frees (a slot under a cap it is at, its links' share while its transfer
  is not seen ended, its guest): its end is worth seeing at once.
- `finish(key, now, Outcome(succeeded, reason=None, transient=False)) -> Decision` with
  `kind` "done" | "retry" (queued again, `retry_at` set) | "failed", `attempt`, `reason`.
- `next_wakeup(now) -> float | None`: when to poll next if nothing else happens.
- `snapshot(now) -> EngineSnapshot`; `state(key)`; `pending_handshakes(target, now)`;
  `handshake_budget(target)`; `concurrency_limit(target)`; `start_interval(target)`;
  `update_policy(policy)` keeps all state.

Rules enforced together at each start
-------------------------------------
1. Cluster cap `max_parallel`; per-source cap; per-target cap, which is the AIMD concurrency
   allowance (starts at `min(max_parallel, max_parallel_per_target)`).
2. SSH handshake pacing per target. PVE opens every SSH connection of a migration only after
   the previous one returned, so a migration holds at most one of the target sshd's
   MaxStartups slots at a time; it may hold one during its start phase (`/bin/true`,
   `qm start`, `mtunnel`: `start_spread_seconds + handshake_seconds` from its start, or until
   `notify_tunnel_up`) and its end phase (`rm -f`, `qm unlock`: `end_spread_seconds +
   handshake_seconds` from the latest `notify_ending`, or until `finish`). The engine's estimate of
   pending handshakes on a target is the number of its migrations inside such a phase: an
   upper bound, whatever the exact timing inside the phases. A start is allowed only if the
   estimate stays within the budget `floor(MaxStartups.start * handshake_safety)` (AIMD
   adjusted), and at least `start window / budget` after the previous start to that target,
   so the budget refills evenly instead of in bursts. Defaults: budget 5 of sshd's 10,
   window 5.25 s, one start per 1.05 s per target (about 0.95/s; 57/min), at most 5 of our
   handshakes pending on a target however the phases line up. The window is learned per
   target: 1.25 x the slowest of its last 8 start phases seen in task logs
   (`notify_tunnel_up`, `notify_tunnel_pending`) when that is longer, since handshakes slow
   down with a busy host; the start slots already held grow with it.
3. AIMD: an `ssh_dropped` outcome halves the target's concurrency allowance and handshake
   budget (floor 1; the spacing doubles), at most once per wave (drops of migrations started
   before the last decrease are ignored); every `aimd_increase_every` successes on the target
   add one to each, up to the caps.
4. Order: effective priority (priority + waited / `priority_aging_seconds`) first, then FIFO.
   A job blocked by its own target's or source's limits is skipped, not waited for, so it
   never blocks jobs for other targets; aging keeps a high-priority stream from starving
   older low-priority jobs.
5. Retries: transient failures are queued again after `backoff_base * 2**(attempt-1)`
   (capped at `backoff_max`, times a uniform jitter factor in [1-jitter, 1+jitter]) until
   `max_attempts` attempts were made; permanent failures fail at once.
6. One migration per VM at a time: two jobs for one VM (a drain's and a placement's) never
   run together; the second waits, as PVE would refuse it (`VM is locked (migrate)`).
7. Stream-rate floor per source: with `min_stream_rate` set and at least
   `min_streams_per_source` (2) migrations leaving a source, one more may start only while
   the source's outflow, shared by one more stream, stays above the floor. Each rate
   reported with `observe_rate(key, bytes_per_second, dirty_bounds)` times the streams then
   leaving the source tells the outflow; the least told counts (streams in a start or end
   phase send nothing, so the others overstate it), and the last outflow told stands in
   while no stream of the source is measured. A link does not change: the least outflow
   ever told by a stream at its source's top rate, not alone there, bounds it too, for
   jobs to that stream's target (a burst of starts or unseen transfer ends overstated it
   up to twice, and a guest dirtying 120 MiB/s fell below its share of 10-11 streams).
   Told below 3/4 of the source's link (as declared, or as told on the way to another
   target), it is that target's: it bounds the target's ingress, not the source's link
   (a 5 Gbit/s target's streams so kept a 25 Gbit/s source below the floor for every
   job to that target: bench/RESULTS.md, issue 13 fourteenth and thirteenth passes).
   A stream slower than another of its source read within a second (or far slower than
   one read earlier, at another moment of the link), and below its share of its source's
   link as that bound tells it, is held by its target: its rate
   times the migrations into that target bounds the target's ingress (the least so told), and
   jobs to an undeclared target keep the floor there too. Both hold while migrations run:
   once none does, other traffic may have shared the links, and they are learned again.
   A rate at `capped_stream_rate` (768 MiB/s: one ssh/sshd pair's cipher, not the link,
   set it) only bounds the outflow from below, times the streams sending then (tunnel up,
   transfer not ended), not those still logging in: such rates count only while no
   stream is below it, and then the most told, so a 25 Gbit/s link is learned as its
   capped streams add up, not as one stream's speed.
   More streams than the link carries at that rate only re-send dirtied memory
   (bench/RESULTS.md: at 64 parallel on 10 Gbit/s the drain took 4.3x the bandwidth
   bound without it).
8. Convergence: a migration starts only while every stream on its source's link (and its
   target's, when `node_link_capacity` declares it or held streams told it, rule 7),
   itself included, keeps an equal share of at least `convergence_margin` (2) times its
   guest's dirty rate. That rate is guessed
   from `Job.memory_bytes` (`assumed_dirty_share` 1/128 per second, at least
   `assumed_dirty_floor` 16 MiB/s) and clamped into what the task log told (`dirty_bounds`:
   PVE names it only above the stream's rate; pages re-sent past the guest's memory bound
   it from below). The link is the outflow told, else the declared capacity, else
   `cold_link_capacity` (1 Gbit/s). A lone stream is never held back. Write-heavy giants
   so run with few companions, small guests fill the gaps, and the number of streams per
   link follows the link; caps stay upper limits.
   Rules 7 and 8 count the migrations on a link but those whose log showed the transfer
   ended (`notify_transfer_ended`): their end phase sends no memory. A predicted end
   (`notify_ending`) does not free the link: the stream may still send, and a companion
   started then doubled downtime limits (bench/RESULTS.md, issue 13 eighth pass).
"""

from proxmigrate.engine.core import MigrationEngine
from proxmigrate.engine.jobs import Decision, EngineSnapshot, Job, Outcome
from proxmigrate.engine.policy import EnginePolicy, MaxStartups, RetryPolicy, link_payload

__all__ = [
    "Decision",
    "EnginePolicy",
    "EngineSnapshot",
    "Job",
    "MaxStartups",
    "MigrationEngine",
    "Outcome",
    "RetryPolicy",
    "link_payload",
]
