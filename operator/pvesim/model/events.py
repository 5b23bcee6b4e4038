"""A deterministic event queue on simulated time."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Callback = Callable[..., None]


class EventQueue:
    """Min-heap of (time, sequence, callback, args); the sequence keeps FIFO order at ties."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callback, tuple[Any, ...]]] = []
        self._seq = 0

    def push(self, at: float, callback: Callback, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, callback, args))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[float, Callback, tuple[Any, ...]]:
        at, _, callback, args = heapq.heappop(self._heap)
        return at, callback, args
