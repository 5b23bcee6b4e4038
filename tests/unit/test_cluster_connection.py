"""Tenancy of a ProxmoxCluster's connection: Secrets of its namespace or shared with it, TLS
verification off only when the operator allows it, CA bundles checked."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from proxmigrate.api.cluster import ProxmoxClusterSpec
from proxmigrate.api.fields import SpecError
from proxmigrate.controllers import connection
from proxmigrate.controllers.connection import ConfigurationError, read_connection
from proxmigrate.controllers.options import OPTIONS
from proxmigrate.kube import Secret

TOKEN = {"tokenId": "root@pam!production", "tokenSecret": "3f0c1a4e-0000-4000-8000-000000000000"}


class SecretsKube:
    def __init__(self, secrets: dict[tuple[str, str], Secret]) -> None:
        self.secrets = secrets
        self.reads: list[tuple[str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> Secret:
        self.reads.append((namespace, name))
        if (namespace, name) not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        return self.secrets[(namespace, name)]


def _spec(**tls: Any) -> ProxmoxClusterSpec:
    ref = {"name": "pve-token", "namespace": tls.pop("secret_namespace", None)}
    return ProxmoxClusterSpec.from_spec(
        {
            "endpoints": ["pve.example:8006"],
            "credentialsSecretRef": {k: v for k, v in ref.items() if v},
            "tls": tls,
        }
    )


def _connect(kube: SecretsKube, spec: ProxmoxClusterSpec, namespace: str) -> Any:
    return asyncio.run(read_connection(kube, spec, namespace))  # type: ignore[arg-type]


def test_a_secret_of_another_namespace_is_refused_unless_it_is_shared_with_this_one() -> None:
    kube = SecretsKube({("victim", "pve-token"): Secret(TOKEN, {})})
    with pytest.raises(ConfigurationError) as refused:
        _connect(kube, _spec(secret_namespace="victim"), "attacker")
    assert refused.value.reason == "SecretNotShared"
    assert "proxmigrate.dev/allowed-namespaces" in str(refused.value)
    # a missing Secret elsewhere reads the same: nothing is learnt about other namespaces
    with pytest.raises(ConfigurationError) as missing:
        _connect(SecretsKube({}), _spec(secret_namespace="victim"), "attacker")
    assert str(missing.value) == str(refused.value)
    shared = {"proxmigrate.dev/allowed-namespaces": "team-a, attacker"}
    kube = SecretsKube({("victim", "pve-token"): Secret(TOKEN, shared)})
    assert _connect(kube, _spec(secret_namespace="victim"), "attacker").auth is not None


def test_the_own_namespace_needs_no_annotation() -> None:
    kube = SecretsKube({("team", "pve-token"): Secret(TOKEN, {})})
    assert _connect(kube, _spec(), "team").verify_tls


def test_insecure_skip_verify_is_refused_before_any_secret_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = SecretsKube({("team", "pve-token"): Secret(TOKEN, {})})
    with pytest.raises(ConfigurationError) as refused:
        _connect(kube, _spec(insecureSkipVerify=True), "team")
    assert refused.value.reason == "InsecureTLSRefused"
    assert "--allow-insecure-tls" in str(refused.value)
    assert kube.reads == []
    monkeypatch.setattr(OPTIONS, "allow_insecure_tls", True)
    assert not _connect(kube, _spec(insecureSkipVerify=True), "team").verify_tls


def test_insecure_skip_verify_with_a_ca_bundle_is_an_invalid_spec() -> None:
    with pytest.raises(SpecError, match="insecureSkipVerify"):
        _spec(insecureSkipVerify=True, caBundle="-----BEGIN CERTIFICATE-----")


def test_a_malformed_ca_bundle_is_named_as_such() -> None:
    kube = SecretsKube({("team", "pve-token"): Secret(TOKEN, {})})
    with pytest.raises(ConfigurationError) as refused:
        _connect(kube, _spec(caBundle="not a certificate"), "team")
    assert refused.value.reason == "InvalidCABundle"
    assert "spec.tls.caBundle" in str(refused.value)


def test_the_ca_bundle_file_is_private_and_never_one_planted_in_tmp(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ca",
         "-keyout", str(key), "-out", str(cert), "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem = cert.read_text()
    kube = SecretsKube({("team", "pve-token"): Secret(TOKEN, {})})
    path = Path(_connect(kube, _spec(caBundle=pem), "team").ca_bundle)
    assert path.read_text() == pem
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert path.parent == connection._CA_DIR
    assert not str(path.parent).rstrip("/").endswith("/tmp")


def test_the_ca_bundle_directory_goes_when_the_process_exits(tmp_path: Path) -> None:
    script = (
        "from proxmigrate.controllers import connection\n"
        "print(connection._ca_file('-----BEGIN CERTIFICATE-----'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(connection.__file__).parents[2])},
    )
    path = Path(done.stdout.strip())
    assert path.name.endswith(".pem") and "proxmigrate-ca-" in str(path.parent)
    assert not path.parent.exists()
