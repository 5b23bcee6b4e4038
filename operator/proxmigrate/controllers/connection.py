"""How a ProxmoxCluster reaches PVE: endpoints, TLS and credentials, under a tenancy rule.

A ProxmoxCluster may only use what its namespace owns. Its Secrets live in its own namespace,
unless a Secret elsewhere names that namespace in its `proxmigrate.dev/allowed-namespaces`
annotation (the Secret's owner shares it; a tenant cannot). `insecureSkipVerify` sends the
token to whoever answers at the endpoint, so it is refused unless the operator was started
with `--allow-insecure-tls`; when allowed, each connection says that verification is off.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from proxmigrate import metrics
from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.enums import AuthMethod
from proxmigrate.api.refs import SecretRef
from proxmigrate.controllers.options import OPTIONS
from proxmigrate.kube import Kube
from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.transport import Auth, PasswordAuth, TokenAuth

log = logging.getLogger(__name__)
SHARED_WITH = "proxmigrate.dev/allowed-namespaces"  # Secret annotation: comma-separated


class ConfigurationError(Exception):
    """The cluster cannot be reached as configured; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def read_secret(kube: Kube, ref: SecretRef, namespace: str, what: str) -> dict[str, str]:
    """The data of the Secret `ref` names for an object in `namespace`, if the tenancy rule
    (module docstring) lets that namespace use it. The refusal reads the same whether the
    Secret exists or not, so it tells a tenant nothing about other namespaces."""
    secret_ns = ref.namespace_or(namespace)
    try:
        secret = await kube.read_secret(secret_ns, ref.name)
    except ApiException as error:
        if secret_ns != namespace:
            secret = None
        elif error.status == 404:
            raise ConfigurationError(
                "SecretNotFound", f"{what} Secret {secret_ns}/{ref.name} does not exist"
            ) from None
        else:
            raise ConfigurationError(
                "SecretUnreadable",
                f"cannot read {what} Secret {secret_ns}/{ref.name}: {error.reason}",
            ) from None
    if secret_ns != namespace:
        shared = (secret.annotations.get(SHARED_WITH, "") if secret else "").split(",")
        if namespace not in {entry.strip() for entry in shared}:
            raise ConfigurationError(
                "SecretNotShared",
                f"{what} Secret {secret_ns}/{ref.name} is not shared with namespace "
                f"{namespace}: its owner must list {namespace} in its {SHARED_WITH} annotation",
            )
    assert secret is not None
    return secret.data


async def _credentials(kube: Kube, spec: ProxmoxClusterSpec, namespace: str) -> Auth:
    ref = spec.credentials_secret_ref
    data = await read_secret(kube, ref, namespace, "credentials")
    if data.get("tokenId") and data.get("tokenSecret"):
        try:
            return TokenAuth(data["tokenId"], data["tokenSecret"])
        except ValueError as error:
            raise ConfigurationError("InvalidCredentials", str(error)) from None
    if data.get("username") and data.get("password"):
        return PasswordAuth(data["username"], data["password"])
    raise ConfigurationError(
        "InvalidCredentials",
        f"Secret {ref.namespace_or(namespace)}/{ref.name} needs tokenId + tokenSecret "
        "(API token) or username + password (ticket)",
    )


_CA_DIR: Path | None = None


def _ca_file(pem: str) -> str:
    """The bundle as a file in a directory only this process owns (mode 0700, made with
    mkdtemp), named by its hash: nobody else can plant or change a file there. The
    directory goes when the process exits."""
    global _CA_DIR
    if _CA_DIR is None:
        _CA_DIR = Path(tempfile.mkdtemp(prefix="proxmigrate-ca-"))
        atexit.register(shutil.rmtree, _CA_DIR, ignore_errors=True)
    path = _CA_DIR / f"{hashlib.sha256(pem.encode()).hexdigest()}.pem"
    if not path.exists():
        partial = path.with_suffix(".tmp")
        partial.write_text(pem)
        os.replace(partial, path)
    return str(path)


async def _ca_bundle(kube: Kube, spec: ProxmoxClusterSpec, namespace: str) -> str | None:
    """A file with the CA bundle requests should trust, or None for the system store."""
    pem = spec.tls.ca_bundle
    where = "spec.tls.caBundle"
    if spec.tls.ca_secret_ref is not None:
        ref = spec.tls.ca_secret_ref
        data = await read_secret(kube, ref, namespace, "CA")
        pem = data.get(spec.tls.ca_secret_key)
        where = f"key {spec.tls.ca_secret_key} of CA Secret {ref.name}"
        if not pem:
            raise ConfigurationError("InvalidCredentials", f"CA Secret {ref.name} has no {where}")
    if not pem:
        return None
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as error:
        raise ConfigurationError(
            "InvalidCABundle", f"{where} is not a PEM CA certificate: {error}"
        ) from None
    return _ca_file(pem)


@dataclass(frozen=True)
class Connection:
    """Everything that decides how the PVE API is reached; a change means a new client."""

    endpoints: tuple[str, ...]
    auth: Auth
    verify_tls: bool
    ca_bundle: str | None

    def client(self, cluster: str) -> AsyncPveClient:
        return AsyncPveClient(
            PveClient(
                list(self.endpoints),
                self.auth,
                on_answer=metrics.pve_answer_counter(cluster),
                verify_tls=self.verify_tls,
                ca_bundle=self.ca_bundle,
            )
        )

    @property
    def auth_method(self) -> AuthMethod:
        return AuthMethod.TICKET if isinstance(self.auth, PasswordAuth) else AuthMethod.TOKEN


async def read_connection(kube: Kube, spec: ProxmoxClusterSpec, namespace: str) -> Connection:
    """Endpoints, TLS and the credentials as they are now (Secrets are re-read each time).
    TLS is checked before any Secret is read: a refused cluster learns nothing."""
    if spec.tls.insecure_skip_verify and not OPTIONS.allow_insecure_tls:
        raise ConfigurationError(
            "InsecureTLSRefused",
            "spec.tls.insecureSkipVerify would send the credentials to whoever answers at "
            "the endpoints; give PVE's CA (spec.tls.caBundle or caSecretRef), or start the "
            "operator with --allow-insecure-tls",
        )
    return Connection(
        endpoints=tuple(str(endpoint) for endpoint in spec.endpoints),
        auth=await _credentials(kube, spec, namespace),
        verify_tls=not spec.tls.insecure_skip_verify,
        ca_bundle=await _ca_bundle(kube, spec, namespace),
    )
