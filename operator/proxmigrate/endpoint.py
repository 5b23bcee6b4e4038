"""A PVE API endpoint (`host[:port]`), as `ProxmoxCluster.spec.endpoints[]` names it (pure).

Both the API types, which check the spec, and the PVE adapter, which connects, use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PORT = 8006  # pveproxy


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`host`, `host:port`, `[v6]` or `[v6]:port`."""
        text = text.strip()
        match = re.fullmatch(
            r"\[(?P<v6>[^\]]+)\](?::(?P<v6port>\d+))?|(?P<host>[^:\s]+)(?::(?P<port>\d+))?", text
        )
        if match is None:
            raise ValueError(f"endpoint {text!r} is not host or host:port")
        host = match["v6"] or match["host"]
        port = int(match["v6port"] or match["port"] or DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise ValueError(f"endpoint {text!r} has port {port}, outside 1-65535")
        return cls(host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self}"
