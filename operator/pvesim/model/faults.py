"""Fault switches; the model holds them, the HTTP server applies the API ones."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ApiFaults:
    error_rate: float = 0.0  # share of API requests answered with `error_status`
    error_status: int = 500
    latency: float = 0.0  # extra real seconds before each answer
    endpoints_down: set[int] = field(default_factory=set)  # endpoint indexes refusing connections
    ticket_epoch: int = 0  # bumped to expire every ticket issued before

    def as_dict(self) -> dict[str, object]:
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "latency": self.latency,
            "endpoints_down": sorted(self.endpoints_down),
            "ticket_epoch": self.ticket_epoch,
        }
