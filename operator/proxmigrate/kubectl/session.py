"""The user's kubeconfig, context and namespace, and the few API calls the plugin makes."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from proxmigrate.api.constants import GROUP, VERSION
from proxmigrate.kubectl.errors import PluginError

# kopf's peering objects (kopf._core.engines.peering): status maps each live replica's id to
# {priority, lifetime, lastseen}.
KOPF_GROUP, KOPF_VERSION = "kopf.dev", "v1"


class Session:
    """One kubeconfig context; `namespace` defaults to the context's, else `default`."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context
            )
        except config.ConfigException as error:
            raise PluginError(f"cannot load kubeconfig: {error}") from None
        self.server = str(self.api.configuration.host)
        self.namespace = namespace or _context_namespace(kubeconfig, context)
        self.custom = client.CustomObjectsApi(self.api)

    def list_objects(self, plural: str, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
        if all_namespaces:
            answer = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            answer = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural
            )
        return list(cast(dict[str, Any], answer).get("items", []))

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, name
                ),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, body
            ),
        )

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)

    def json_patch(
        self, plural: str, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> None:
        """An RFC 6902 patch (its `test` operations make it fail rather than clobber)."""
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            operations,
            _content_type="application/json-patch+json",
        )

    def peerings(self, namespaces: list[str] | None) -> list[dict[str, Any]]:
        """kopf's ClusterKopfPeerings and the KopfPeerings of `namespaces` (empty or None:
        all); none where kopf's CRDs are not installed."""
        scopes: list[tuple[str, str | None]] = [("clusterkopfpeerings", None)]
        where: list[str | None] = list(namespaces) if namespaces else [None]
        scopes += [("kopfpeerings", namespace) for namespace in where]
        found: list[dict[str, Any]] = []
        for plural, namespace in scopes:
            try:
                answer = (
                    self.custom.list_cluster_custom_object(KOPF_GROUP, KOPF_VERSION, plural)
                    if namespace is None
                    else self.custom.list_namespaced_custom_object(
                        KOPF_GROUP, KOPF_VERSION, namespace, plural
                    )
                )
            except ApiException as error:
                if error.status == 404:
                    continue
                raise
            found += cast(dict[str, Any], answer).get("items", [])
        return found


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def api_message(error: ApiException) -> str:
    return str(error.reason if not error.body else error.body)
