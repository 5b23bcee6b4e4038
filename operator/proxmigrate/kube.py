"""Kubernetes API calls kopf does not make for us, each run in a worker thread.

kopf watches and patches the object a handler was called for; everything else (status of
other objects, child VMMigrations, Secrets) goes through the official client here, off the
event loop. Every call has a timeout and every connection TCP keepalives: an API server that
stops answering, or a connection silently dropped on the way, fails a call within
REQUEST_TIMEOUT instead of freezing the thread (and the handler awaiting it) for good.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.keepalive import tcp_keepalive_socket_options

from proxmigrate.api.constants import GROUP, VERSION

# (connect, read) seconds for every call: reads and patches answer in milliseconds.
REQUEST_TIMEOUT = (5.0, 20.0)
# A silent peer is noticed after 10 s idle + 3 probes 5 s apart.
KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}


class Secret(NamedTuple):
    data: dict[str, str]  # decoded
    annotations: dict[str, str]


def _load_api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped upstream
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.socket_options = tcp_keepalive_socket_options(**KEEPALIVE)
    return client.ApiClient(configuration)


def check_api_server() -> None:
    """Raise when the configured API server cannot be reached (ConfigException: no
    configuration; urllib3/OS errors: no answer; ApiException: refused)."""
    client.VersionApi(_load_api_client()).get_code(_request_timeout=REQUEST_TIMEOUT)


class Kube:
    """Thin async facade over `kubernetes.client` for our custom objects and Secrets."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api_client = api_client or _load_api_client()
        self._custom = client.CustomObjectsApi(self._api_client)
        self._core = client.CoreV1Api(self._api_client)

    async def read_secret(self, namespace: str, name: str) -> Secret:
        """A Secret's data (decoded) and annotations; raises `ApiException` (404) when it
        does not exist."""
        secret = await asyncio.to_thread(
            self._core.read_namespaced_secret, name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
        data = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
        annotations = secret.metadata.annotations if secret.metadata else None
        return Secret(data, dict(annotations or {}))

    async def _unless_missing(
        self, call: Callable[..., object], *args: Any
    ) -> dict[str, Any] | None:
        """`call(GROUP, VERSION, *args)` off the event loop (its answer, a JSON object); None
        when the object is gone (404)."""
        try:
            answer = await asyncio.to_thread(
                call, GROUP, VERSION, *args, _request_timeout=REQUEST_TIMEOUT
            )
            return cast(dict[str, Any], answer)
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
            _request_timeout=REQUEST_TIMEOUT,
        )
        return list(cast(dict[str, Any], answer).get("items", []))

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: object = await asyncio.to_thread(
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            body,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return cast(dict[str, Any], answer)

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
