"""Backoff between attempts: exponential, capped, with multiplicative jitter."""

from __future__ import annotations

import random

from proxmigrate.engine.policy import RetryPolicy


def backoff_delay(policy: RetryPolicy, failed_attempt: int, rng: random.Random) -> float:
    """Seconds to wait after attempt `failed_attempt` (1-based) failed transiently.

    Jitter spreads retries of migrations that failed together (e.g. one sshd burst), so they
    do not come back as the same burst.
    """
    nominal = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(failed_attempt - 1, 64))
    return nominal * rng.uniform(1.0 - policy.jitter, 1.0 + policy.jitter)
