"""A tenant cannot make the operator send another namespace's token to a listener of theirs."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.operator_env import condition, create, get, wait_cluster_decided
from tests.support.controlplane import ControlPlane
from tests.support.devenv import OperatorProcess, ensure_namespace

VICTIM, ATTACKER = "e2e-victim", "e2e-attacker"
TOKEN = {"tokenId": "root@pam!production", "tokenSecret": "5b1e0f4c-7d1a-4c1e-9a57-0123456789ab"}


class Listener:
    """A TLS server on loopback, as an attacker would run: records every byte it is sent."""

    def __init__(self, tmp_path: Path) -> None:
        key, cert = tmp_path / "evil.key", tmp_path / "evil.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=evil",
             "-keyout", str(key), "-out", str(cert), "-days", "1"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.cert = cert.read_text()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    self.received += tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 401 no\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    served = Listener(tmp_path)
    try:
        yield served
    finally:
        served.close()


def _cluster(name: str, port: int, tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "proxmigrate.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {"name": name},
        "spec": {
            "endpoints": [f"127.0.0.1:{port}"],
            "credentialsSecretRef": {"name": "pve-token", "namespace": VICTIM},
            "tls": tls,
        },
    }


def test_another_namespaces_token_never_reaches_a_tenants_listener(
    control_plane: ControlPlane, tmp_path: Path, listener: Listener
) -> None:
    api = control_plane.api_client()
    for namespace in (VICTIM, ATTACKER):
        ensure_namespace(api, namespace)
    client.CoreV1Api(api).create_namespaced_secret(
        VICTIM,
        {
            "metadata": {"name": "pve-token"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in TOKEN.items()},
        },
    )
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log") as operator:
        create(api, ATTACKER, "proxmoxclusters", _cluster("steal", listener.port, {}))
        create(
            api,
            ATTACKER,
            "proxmoxclusters",
            _cluster("skip", listener.port, {"insecureSkipVerify": True}),
        )
        create(
            api,
            ATTACKER,
            "proxmoxclusters",
            _cluster("own-ca", listener.port, {"caBundle": listener.cert}),
        )
        reasons = {
            name: wait_cluster_decided(api, ATTACKER, operator, name)["reason"]
            for name in ("steal", "skip", "own-ca")
        }
    assert reasons == {
        "steal": "SecretNotShared",
        "skip": "InsecureTLSRefused",
        "own-ca": "SecretNotShared",
    }, reasons
    assert TOKEN["tokenSecret"].encode() not in listener.received
    assert listener.connections == 0
    ready = condition(get(api, ATTACKER, "proxmoxclusters", "steal"), "Ready")
    assert ready is not None and TOKEN["tokenSecret"] not in str(ready)
