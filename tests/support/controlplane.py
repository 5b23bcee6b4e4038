"""A throwaway Kubernetes control plane (etcd + kube-apiserver) on loopback.

Used by the end-to-end tests and `make demo`, envtest style: real binaries found or built
by `hack/provision.py` (`PROXMIGRATE_KUBE_APISERVER`/`PROXMIGRATE_ETCD`, the cache
`~/.cache/proxmigrate/bin`, or PATH, at the pinned versions), fresh certificates and data
per start, every process stopped by its own PID. Without `controller_manager=True` (the
demo) there is no kube-controller-manager: no garbage collection, no default
ServiceAccounts, no aggregated ClusterRoles, and namespaces never finish deleting.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
KOPF_PEERING_CRDS = REPO_ROOT / "hack" / "kopf-peering-crds.yaml"
# What a cluster's kube-controller-manager does that the tests rely on: ownerReferences
# (garbage collection), namespace deletion, default ServiceAccounts and their tokens, and
# the aggregation of `aggregate-to-*` ClusterRoles into view/edit/admin.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be provisioned or started; the message says why."""


@cache
def provisioning() -> ModuleType:
    """hack/provision.py: the one table of pinned binaries and where each comes from.

    Loaded by path: hack/ is a directory of scripts, not a package on sys.path.
    """
    spec = importlib.util.spec_from_file_location(
        "proxmigrate_provision", REPO_ROOT / "hack" / "provision.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


@cache
def tool(name: str) -> Path:
    """The pinned `name` (hack/provision.py's table): given, cached, on PATH, or built now."""
    provision = provisioning()
    try:
        return Path(provision.ensure([provision.component(name)])[name])
    except provision.ProvisionError as error:
        raise ControlPlaneError(str(error)) from None


K8S_VERSION = str(provisioning().component("kube-apiserver").version)


def binaries() -> tuple[Path, Path]:
    """Paths of kube-apiserver and etcd, building them once if nothing provides them."""
    return tool("kube-apiserver"), tool("etcd")


def tail_file(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Pki:
    """File paths of the certificates one control plane uses."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_public: Path
    sa_private: Path
    admin_cert: Path
    admin_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else None
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([usage or x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write_pki(directory: Path) -> _Pki:
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxmigrate-test-ca")])
    ca = _certificate(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    serving_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    serving = _certificate(serving_name, serving_key.public_key(), ca_name, ca_key, sans=sans)

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "proxmigrate-admin"),
        ]
    )
    admin = _certificate(admin_name, admin_key.public_key(), ca_name, ca_key, client=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = _Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_public=directory / "sa.pub",
        sa_private=directory / "sa.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
    )
    pki.ca_cert.write_bytes(ca.public_bytes(pem))
    pki.serving_cert.write_bytes(serving.public_bytes(pem))
    pki.serving_key.write_bytes(_pem_key(serving_key))
    pki.admin_cert.write_bytes(admin.public_bytes(pem))
    pki.admin_key.write_bytes(_pem_key(admin_key))
    pki.sa_private.write_bytes(_pem_key(sa_key))
    pki.sa_public.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports; use as a context manager.

    `crds` are applied once the apiserver is ready; with `controller_manager=True` a
    kube-controller-manager (CONTROLLERS only) starts after them, so its garbage collector
    watches those kinds from its first sync instead of after its next discovery (30 s).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        controller_manager: bool = False,
        crds: Sequence[Path] = (),
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="proxmigrate-cp-"))
        self.kubeconfig = self.workdir / "kubeconfig"
        self.url = ""
        self.controller_manager = controller_manager
        self.crds = tuple(crds)
        self._processes: list[subprocess.Popen[bytes]] = []
        self._names: list[str] = []  # of _processes, in order
        self._pki: _Pki | None = None

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> None:
        apiserver, etcd = binaries()
        if self.controller_manager:
            tool("kube-controller-manager")  # built (once) before anything starts
        self._pki = pki = _write_pki(self.workdir / "pki")
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(etcd),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self.url = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--service-account-issuer=https://127.0.0.1",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                "--allow-privileged=true",
            ],
        )
        self._write_kubeconfig()
        deadline = time.monotonic() + timeout
        try:
            self._wait_ready(timeout)
            if self.crds:
                self.apply_crds(list(self.crds), timeout=deadline - time.monotonic())
            if self.controller_manager:
                self._start_controller_manager(deadline)
        except BaseException:
            self.stop()
            raise

    def _start_controller_manager(self, deadline: float) -> None:
        """kube-controller-manager with the admin's kubeconfig, serving nothing (port 0);
        ready once its ServiceAccount controller has created `default/default`."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        assert self._pki is not None
        self._spawn(
            "kube-controller-manager",
            [
                str(tool("kube-controller-manager")),
                f"--kubeconfig={self.kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self._pki.sa_private}",
                f"--root-ca-file={self._pki.ca_cert}",
                "--concurrent-gc-syncs=5",
            ],
        )
        core = client.CoreV1Api(self.api_client())
        while True:
            self._check_running()
            try:
                core.read_namespaced_service_account("default", "default")
                return
            except ApiException as error:
                if error.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    "kube-controller-manager created no default ServiceAccount in time: "
                    f"{tail_file(self.workdir / 'kube-controller-manager.log', 15)}"
                )
            time.sleep(0.25)

    def _check_running(self) -> None:
        """ControlPlaneError (with its log's tail) if a process has exited."""
        for name, process in zip(self._names, self._processes, strict=True):
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}: "
                    f"{tail_file(self.workdir / f'{name}.log', 15)}"
                )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._processes.append(process)
        self._names.append(name)

    def _write_kubeconfig(self) -> None:
        assert self._pki is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "proxmigrate-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self._pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(self._pki.admin_cert),
                        "client-key": str(self._pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "proxmigrate-test",
                    "context": {"cluster": "proxmigrate-test", "user": "admin"},
                }
            ],
            "current-context": "proxmigrate-test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def _wait_ready(self, timeout: float) -> None:
        assert self._pki is not None
        deadline = time.monotonic() + timeout
        context = ssl.create_default_context(cafile=str(self._pki.ca_cert))
        context.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
        last_error = ""
        while time.monotonic() < deadline:
            self._check_running()
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError as error:
                last_error = str(error)
            time.sleep(0.25)
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout:.0f} s: {last_error}")

    def stop(self) -> None:
        """Stop every process this control plane started, newest first."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        self._names.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def apply_crds(self, paths: list[Path], timeout: float = 30.0) -> None:
        """Create (or replace) CustomResourceDefinitions and wait until each is Established."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = client.ApiextensionsV1Api(self.api_client())
        names = []
        for path in paths:
            for document in yaml.safe_load_all(path.read_text()):
                if not document or document.get("kind") != "CustomResourceDefinition":
                    continue
                name = document["metadata"]["name"]
                try:
                    api.create_custom_resource_definition(document)
                except ApiException as error:
                    if error.status != 409:
                        raise
                    current = api.read_custom_resource_definition(name)
                    document["metadata"]["resourceVersion"] = current.metadata.resource_version
                    api.replace_custom_resource_definition(name, document)
                names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                crd = api.read_custom_resource_definition(name)
                conditions = crd.status.conditions or []
                if any(c.type == "Established" and c.status == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {name} not Established after {timeout} s")
                time.sleep(0.1)

    def api_client(self) -> object:
        """A `kubernetes.client.ApiClient` authenticated as the admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))
