"""The loop NodeDrains and VMPlacements share: re-read the object, reconcile, sleep, repeat."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from kubernetes.client.rest import ApiException

from proxmigrate.controllers.children import is_deleting
from proxmigrate.kube import Kube, shared_kube
from proxmigrate.pve.errors import PveError


class Reconciler:
    """One pass over one object; every decision is re-derived from the API server, so a
    restarted operator picks up where the last pass left off."""

    plural: ClassVar[str]

    def __init__(self, kube: Kube, body: Mapping[str, Any]) -> None:
        self.kube = kube
        self.body = body
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.generation: int | None = body["metadata"].get("generation")
        self.status: Mapping[str, Any] = body.get("status") or {}

    async def run(self) -> None:
        raise NotImplementedError


async def reconcile_forever(
    kind: type[Reconciler], namespace: str, name: str, interval: float, logger: Any
) -> None:
    """Run `kind` over the object every `interval` seconds until it is gone or deleting."""
    kube = shared_kube()
    while True:
        try:
            body = await kube.get(kind.plural, namespace, name)
            if body is None or is_deleting(body):
                return
            await kind(kube, body).run()
        except (ApiException, PveError) as error:
            logger.warning("%s %s/%s: %s", kind.__name__, namespace, name, error)
        except Exception:  # a timeout, a dropped connection, a bug: the next pass starts over
            logger.exception("%s %s/%s: pass failed", kind.__name__, namespace, name)
        await asyncio.sleep(interval)
