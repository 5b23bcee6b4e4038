"""Starts the operator: metrics server, then kopf with every controller registered."""

from __future__ import annotations

from prometheus_client import start_http_server

from proxmigrate import __version__
from proxmigrate.heap import start_trimming
from proxmigrate.metrics import BUILD_INFO, REGISTRY


def run_operator(
    *,
    namespaces: list[str],
    metrics_port: int,
    health_port: int,
    bind_address: str,
    peering: str | None,
    priority: int,
    task_poll_seconds: float,
    peering_lifetime_seconds: int,
    allow_insecure_tls: bool = False,
) -> int:
    import kopf

    from proxmigrate import controllers  # noqa: F401  (registers the kopf handlers)
    from proxmigrate.controllers.options import OPTIONS
    from proxmigrate.controllers.registry import Registry

    OPTIONS.task_poll_seconds = task_poll_seconds
    OPTIONS.peering_lifetime_seconds = peering_lifetime_seconds
    OPTIONS.peering_mandatory = peering is not None
    OPTIONS.allow_insecure_tls = allow_insecure_tls
    start_http_server(metrics_port, addr=bind_address, registry=REGISTRY)
    BUILD_INFO.labels(version=__version__).set(1)
    start_trimming()
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=f"http://{bind_address}:{health_port}/healthz",
        memo=kopf.Memo(registry=Registry()),
    )
    return 0
