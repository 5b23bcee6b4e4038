"""Kubernetes API calls kopf does not make for us, each run in a worker thread.

kopf watches and patches the object a handler was called for; everything else (status of
other objects, child VMMigrations, Secrets) goes through the official client here, off the
event loop.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from proxmigrate.api.constants import GROUP, VERSION


def _load_api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def check_api_server() -> None:
    """Raise when the configured API server cannot be reached (ConfigException: no
    configuration; urllib3/OS errors: no answer; ApiException: refused)."""
    client.VersionApi(_load_api_client()).get_code(_request_timeout=10)


class Kube:
    """Thin async facade over `kubernetes.client` for our custom objects and Secrets."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api_client = api_client or _load_api_client()
        self._custom = client.CustomObjectsApi(self._api_client)
        self._core = client.CoreV1Api(self._api_client)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded; raises `ApiException` (404) when it does not exist."""
        secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    async def _unless_missing(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(GROUP, VERSION, *args)` off the event loop; None when the object is gone (404)."""
        try:
            return await asyncio.to_thread(call, GROUP, VERSION, *args)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._unless_missing(
            self._custom.get_namespaced_custom_object, namespace, plural, name
        )

    async def list(
        self, plural: str, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        answer = await asyncio.to_thread(
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            label_selector=label_selector,
        )
        return list(answer.get("items", []))

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(
            self._custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body
        )

    async def delete(self, plural: str, namespace: str, name: str) -> bool:
        """Delete an object; False when it was already gone."""
        answer = await self._unless_missing(
            self._custom.delete_namespaced_custom_object, namespace, plural, name
        )
        return answer is not None

    async def patch(
        self, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch an object's metadata or spec; None when it no longer exists."""
        return await self._unless_missing(
            self._custom.patch_namespaced_custom_object, namespace, plural, name, body
        )

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch `status` through the status subresource; None when the object is gone."""
        return await self._unless_missing(
            self._custom.patch_namespaced_custom_object_status,
            namespace,
            plural,
            name,
            {"status": status},
        )


_shared: Kube | None = None


def shared_kube() -> Kube:
    """The process-wide client, created on first use (after kopf has started)."""
    global _shared
    if _shared is None:
        _shared = Kube()
    return _shared
