"""Times as the API stores and shows them: RFC 3339 in UTC, durations like kubectl prints."""

from __future__ import annotations

import datetime


def to_rfc3339(moment: datetime.datetime) -> str:
    """`2026-01-02T03:04:05Z`: metav1.Time's format (seconds, UTC). Naive times count as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime.datetime:
    """The aware datetime of an RFC 3339 string as the API server returns it."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def format_duration(seconds: float) -> str:
    """`45s`, `4m30s`, `2h5m`, `3d4h`: two units at most, like kubectl's ages."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
