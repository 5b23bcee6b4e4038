"""Scaled real time: one real second is `scale` simulated seconds."""

from __future__ import annotations

import time


class ScaledClock:
    def __init__(self, sim_start: float, scale: float) -> None:
        self.sim_start = sim_start
        self.scale = scale
        self.real_start = time.monotonic()

    def now(self) -> float:
        return self.sim_start + (time.monotonic() - self.real_start) * self.scale
