"""pvesim's route table: a request is matched, checked as PVE checks it, then handed over.

The check is pve-manager `PVE/HTTPServer.pm` `rest_handler`'s order: permissions first
(`pvesim.permissions`, on the raw parameters), then the proxy to the node (595 when it is
offline), then `PVE::JSONSchema::validate` of every parameter, path parameters included
(`pvesim.schema`, PVE's own apidoc JSON). Handlers get the typed non-path parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvesim import permissions, schema, views
from pvesim.model import ApiError, Cluster

Params = dict[str, str]


@dataclass
class Request:
    cluster: Cluster
    user: str
    params: dict[str, Any]


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # apidoc form: /nodes/{node}/qemu/{vmid}/config
    pattern: re.Pattern[str]
    handler: Handler


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, "/" + path, regex, handler))
            return handler

        return register

    def include(self, other: Router) -> None:
        """Serve `other`'s routes as well (route modules keep their own tables)."""
        self.routes.extend(other.routes)

    def check_schema(self) -> None:
        """Load PVE's schema and make sure it has every route (raises SchemaMissing)."""
        missing = [
            f"{r.method} {r.path}"
            for r in self.routes
            if r.method not in schema.api_schema().get(r.path, {})
        ]
        if missing:
            raise schema.SchemaMissing(f"PVE's API schema has no {', '.join(missing)}")

    def dispatch(self, cluster: Cluster, method: str, path: str, user: str, raw: Params) -> Any:
        for route in self.routes:
            match = route.pattern.match(path)
            if not match or route.method != method:
                continue
            uri = match.groupdict()
            conflicts = {k: _DUPLICATE for k, v in uri.items() if k in raw and raw[k] != v}
            if conflicts:
                raise ApiError.param(conflicts)
            params = raw | uri
            info = schema.method_info(method, route.path)
            permissions.check_route(cluster, user, info, "/" + path, params)
            if "node" in uri:
                _require_node_reachable(cluster, uri["node"])
            release = views.PVE_VERSIONS[cluster.params.pve_version][1]
            checked = schema.validate(schema.parameters(method, route.path, release), params)
            body = {k: v for k, v in checked.items() if k not in uri}
            return route.handler(Request(cluster, user, body), **uri)
        raise ApiError(501, f"Method '{method} /{path}' not implemented")


_DUPLICATE = "duplicate parameter (already defined in URI) with conflicting values!"


def _require_node_reachable(cluster: Cluster, node: str) -> None:
    """Requests for another node are proxied by pveproxy; an offline node gives 595."""
    target = cluster.node(node)
    if not target.online:
        raise ApiError(595, f"Connection refused while proxying to node {node} (No route to host)")


@dataclass(frozen=True)
class Pending:
    """An answer PVE sends only once `ready()` holds (the server waits, advancing time)."""

    ready: Callable[[], bool]
    data: Any = None


class TotalList(list[Any]):
    """A list result that PVE sends with a `total` beside `data` (task logs)."""

    def __init__(self, rows: list[Any], total: int) -> None:
        super().__init__(rows)
        self.total = total
