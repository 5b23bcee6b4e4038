"""PveClient / AsyncPveClient against a scripted HTTPS server on 127.0.0.1 (no network)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxmigrate.metrics import REGISTRY, pve_answer_counter
from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveTLSError, PveUnreachable
from proxmigrate.pve.transport import PasswordAuth, RequestRetry, TokenAuth

TOKEN = TokenAuth("root@pam!operator", "0f1e2d3c-aaaa-bbbb-cccc-000000000001")
QMIGRATE = "UPID:pve1:0000A1B2:0012F4C8:67C2E0A0:qmigrate:120:root@pam!operator:"
# `GET /cluster/options` with `Sys.Audit` on `/` (pve-manager `PVE/API2/Cluster.pm`
# get_options): datacenter.cfg as pve-cluster `PVE/DataCenterConfig.pm`
# parse_datacenter_config returns it (`migration` parsed, `description` and `mac_prefix`
# always set), plus `allowed-tags`.
FULL_OPTIONS = {
    "description": "",
    "mac_prefix": "BC:24:11",
    "migration": {"type": "secure", "network": "10.1.0.0/24"},
    "allowed-tags": [],
}
_cluster_names = itertools.count()
_cluster_of: dict[int, str] = {}  # the metrics label each client's answers are counted under


@dataclass
class Reply:
    status: int = 200
    data: Any = None
    reason: str | None = None  # PVE puts its error message in the HTTP reason phrase
    errors: dict[str, str] | None = None
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakePve:
    """Routes `(METHOD, /api2/json path)` to scripted replies; the last reply repeats."""

    port: int = 0
    routes: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, "/api2/json/" + path)] = list(replies)

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, "/api2/json/" + path)]

    def answer(self, method: str, path: str) -> Reply:
        replies = self.routes.get((method, path))
        if not replies:
            return Reply(501, reason=f"Method '{method} {path}' not implemented")
        return replies.pop(0) if len(replies) > 1 else replies[0]


def _handler(fake: FakePve) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            path = urllib.parse.unquote(url.path)
            fake.seen.append(
                Seen(
                    self.command,
                    path,
                    urllib.parse.parse_qs(url.query),
                    urllib.parse.parse_qs(body),
                    dict(self.headers.items()),
                )
            )
            reply = fake.answer(self.command, path)
            time.sleep(reply.delay)
            payload: dict[str, Any] = {"data": reply.data}
            if reply.errors:
                payload["errors"] = reply.errors
            raw = json.dumps(payload).encode()
            self.send_response(reply.status, reply.reason)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out on purpose leave broken TLS streams; that is expected."""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (EC: fast to generate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-pve")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def fake(certificate: tuple[Path, Path]) -> Iterator[FakePve]:
    state = FakePve()
    server = _QuietServer(("127.0.0.1", 0), _handler(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(
    fake: FakePve,
    certificate: tuple[Path, Path],
    *,
    endpoints: list[str] | None = None,
    auth: TokenAuth | PasswordAuth = TOKEN,
    sleeps: Sleeps | None = None,
) -> PveClient:
    cluster = f"test-{next(_cluster_names)}"
    client = PveClient(
        endpoints or [f"127.0.0.1:{fake.port}"],
        auth,
        on_answer=pve_answer_counter(cluster),
        ca_bundle=str(certificate[0]),
        timeout=5,
        retry=RequestRetry(attempts=3, base_delay=0.01, max_delay=0.05),
    )
    client.transport._sleep = sleeps if sleeps is not None else Sleeps()
    _cluster_of[id(client)] = cluster
    return client


def requests_counted(client: PveClient, method: str, code: str) -> float:
    labels = {"proxmox_cluster": _cluster_of[id(client)], "method": method, "code": code}
    return REGISTRY.get_sample_value("proxmigrate_pve_api_requests_total", labels) or 0.0


def test_token_header_and_counter(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on("GET", "version", Reply(data={"version": "8.4.1", "release": "8.4"}))
    client = make_client(fake, certificate)
    assert client.version()["version"] == "8.4.1"
    assert client.version()["release"] == "8.4"
    [first, _] = fake.calls("GET", "version")
    assert first.headers["Authorization"] == (
        "PVEAPIToken=root@pam!operator=0f1e2d3c-aaaa-bbbb-cccc-000000000001"
    )
    assert requests_counted(client, "GET", "200") == 2


def test_failover_to_second_endpoint_and_remember_it(
    fake: FakePve, certificate: tuple[Path, Path], closed_port: int
) -> None:
    fake.on("GET", "version", Reply(data={"version": "9.0.3"}))
    sleeps = Sleeps()
    client = make_client(
        fake,
        certificate,
        endpoints=[f"127.0.0.1:{closed_port}", f"127.0.0.1:{fake.port}"],
        sleeps=sleeps,
    )
    assert client.version() == {"version": "9.0.3"}
    assert client.version() == {"version": "9.0.3"}
    assert str(client.transport.active_endpoint) == f"127.0.0.1:{fake.port}"
    assert requests_counted(client, "GET", "0") == 1  # the refused one, tried only once
    assert requests_counted(client, "GET", "200") == 2
    assert sleeps == []  # failover needs no backoff


def test_retry_on_503_then_success(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on(
        "GET",
        "cluster/options",
        Reply(503, reason="Service Unavailable"),
        Reply(data={**FULL_OPTIONS, "bwlimit": "migration=51200"}),
    )
    sleeps = Sleeps()
    client = make_client(fake, certificate, sleeps=sleeps)
    settings = client.cluster_options()
    assert (settings.type, settings.network, settings.bwlimit_kib) == (
        "secure",
        "10.1.0.0/24",
        51200,
    )
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.01
    assert requests_counted(client, "GET", "503") == 1
    assert requests_counted(client, "GET", "200") == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # datacenter.cfg `migration: type=insecure` and `bwlimit: migration=512000,default=...`:
        # bwlimit stays PVE's raw property string
        ({**FULL_OPTIONS, "migration": {"type": "insecure"},
          "bwlimit": "migration=512000,default=1048576"}, ("insecure", None, 512000)),
        ({**FULL_OPTIONS, "bwlimit": "default=1048576"}, ("secure", "10.1.0.0/24", 1048576)),
        # an empty datacenter.cfg: PVE's defaults
        ({"description": "", "mac_prefix": "BC:24:11", "allowed-tags": []},
         ("secure", None, None)),
        # the pre-`migration` option (pve-cluster `PVE/DataCenterConfig.pm`)
        ({"description": "", "migration_unsecure": 1}, ("insecure", None, None)),
        # without Sys.Audit on /: only `console`, `tag-style` and `allowed-tags`
        ({"console": "xtermjs", "allowed-tags": ["prod"]}, ("unknown", None, None)),
        ({"allowed-tags": []}, ("unknown", None, None)),
    ],
)  # fmt: skip
def test_cluster_options(
    fake: FakePve,
    certificate: tuple[Path, Path],
    answer: dict[str, Any],
    expected: tuple[str, str | None, int | None],
) -> None:
    fake.on("GET", "cluster/options", Reply(data=answer))
    settings = make_client(fake, certificate).cluster_options()
    assert (settings.type, settings.network, settings.bwlimit_kib) == expected
    assert settings.hidden is (expected[0] == "unknown")


@pytest.mark.parametrize(
    ("auth", "may_choose"),
    [
        (TOKEN, False),  # the token's user is `root@pam!operator`
        (PasswordAuth("operator@pve", "pw"), False),
        (PasswordAuth("root@pam", "pw"), True),
    ],
)
def test_only_a_root_ticket_may_choose_the_migration_type(
    fake: FakePve, certificate: tuple[Path, Path], auth: TokenAuth | PasswordAuth, may_choose: bool
) -> None:
    client = make_client(fake, certificate, auth=auth)
    assert client.can_choose_migration_type is may_choose
    async_client = AsyncPveClient(client)
    assert async_client.can_choose_migration_type is may_choose
    async_client.close()


def test_no_retry_on_400(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on(
        "POST",
        "nodes/pve1/qemu/120/migrate",
        Reply(
            400,
            reason="Parameter verification failed.",
            errors={"target": "no such cluster node 'pve9'"},
        ),
    )
    sleeps = Sleeps()
    client = make_client(fake, certificate, sleeps=sleeps)
    with pytest.raises(PveApiError) as raised:
        client.migrate("pve1", 120, "pve9")
    assert raised.value.status == 400
    assert raised.value.errors == {"target": "no such cluster node 'pve9'"}
    assert "no such cluster node" in raised.value.text
    assert len(fake.calls("POST", "nodes/pve1/qemu/120/migrate")) == 1
    assert sleeps == []
    assert requests_counted(client, "POST", "400") == 1


def test_migration_post_is_not_repeated_after_a_5xx(
    fake: FakePve, certificate: tuple[Path, Path]
) -> None:
    fake.on("POST", "nodes/pve1/qemu/120/migrate", Reply(500, reason="VM is locked (backup)"))
    client = make_client(fake, certificate)
    with pytest.raises(PveApiError) as raised:
        client.migrate("pve1", 120, "pve2")
    assert (raised.value.status, raised.value.message) == (500, "VM is locked (backup)")
    assert len(fake.calls("POST", "nodes/pve1/qemu/120/migrate")) == 1


def test_migrate_sends_parameters_and_returns_upid(
    fake: FakePve, certificate: tuple[Path, Path], closed_port: int
) -> None:
    fake.on("POST", "nodes/pve1/qemu/120/migrate", Reply(data=QMIGRATE))
    client = make_client(
        fake, certificate, endpoints=[f"127.0.0.1:{closed_port}", f"127.0.0.1:{fake.port}"]
    )
    assert client.migrate("pve1", 120, "pve2", with_local_disks=True, bwlimit_kib=1024) == QMIGRATE
    [call] = fake.calls("POST", "nodes/pve1/qemu/120/migrate")
    assert call.form == {
        "target": ["pve2"],
        "online": ["1"],
        "with-local-disks": ["1"],
        "bwlimit": ["1024"],
    }
    assert "CSRFPreventionToken" not in call.headers


def test_migration_type_needs_a_root_ticket(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    for auth in (TOKEN, PasswordAuth("operator@pve", "pw")):
        client = make_client(fake, certificate, auth=auth)
        with pytest.raises(ValueError, match="root@pam"):
            client.migrate("pve1", 120, "pve2", migration_type="secure")
    assert fake.seen == []


def test_password_auth_renews_ticket_on_401(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    ticket = {"ticket": "PVE:root@pam:T1", "CSRFPreventionToken": "csrf1", "username": "root@pam"}
    fake.on("POST", "access/ticket", Reply(data=ticket))
    fake.on("GET", "cluster/ha/resources", Reply(401, reason="invalid ticket"), Reply(data=[]))
    fake.on("POST", "nodes/pve1/qemu/120/migrate", Reply(data=QMIGRATE))
    client = make_client(fake, certificate, auth=PasswordAuth("root@pam", "hunter2"))
    assert client.ha_resources() == []
    assert len(fake.calls("POST", "access/ticket")) == 2
    assert fake.calls("GET", "cluster/ha/resources")[-1].headers["Cookie"] == (
        "PVEAuthCookie=PVE:root@pam:T1"
    )
    assert client.migrate("pve1", 120, "pve2", migration_type="secure") == QMIGRATE
    [post] = fake.calls("POST", "nodes/pve1/qemu/120/migrate")
    assert post.form["migration_type"] == ["secure"]
    assert post.headers["CSRFPreventionToken"] == "csrf1"
    assert requests_counted(client, "GET", "401") == 1


def test_bad_token_is_named(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on("GET", "version", Reply(401, reason="invalid token value!"))
    client = make_client(fake, certificate)
    with pytest.raises(PveAuthError, match=r"API token for root@pam!operator rejected"):
        client.version()
    assert len(fake.calls("GET", "version")) == 1


def test_wrong_password_is_named(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on("POST", "access/ticket", Reply(401, reason="authentication failure"))
    client = make_client(fake, certificate, auth=PasswordAuth("root@pam", "wrong"))
    with pytest.raises(PveAuthError, match="login as root@pam rejected"):
        client.version()
    assert requests_counted(client, "POST", "401") == 1


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_untrusted_certificate_is_a_tls_error(
    fake: FakePve, certificate: tuple[Path, Path]
) -> None:
    fake.on("GET", "version", Reply(data={}))
    client = PveClient([f"127.0.0.1:{fake.port}"], TOKEN)
    with pytest.raises(PveTLSError, match=f"TLS verification failed for 127.0.0.1:{fake.port}"):
        client.version()
    assert fake.seen == []
    insecure = PveClient([f"127.0.0.1:{fake.port}"], TOKEN, verify_tls=False)
    assert insecure.version() == {}


def test_unreachable_names_endpoint_and_cause(
    certificate: tuple[Path, Path], closed_port: int
) -> None:
    sleeps = Sleeps()
    client = PveClient(
        [f"127.0.0.1:{closed_port}"], TOKEN, retry=RequestRetry(attempts=3, base_delay=0.01)
    )
    client.transport._sleep = sleeps
    with pytest.raises(
        PveUnreachable, match=f"cannot connect to 127.0.0.1:{closed_port}: .*refused"
    ):
        client.version()
    assert len(sleeps) == 2  # three rounds, backoff between them


def test_inventory_from_one_request(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on(
        "GET",
        "cluster/resources",
        Reply(
            data=[
                {"type": "node", "node": "pve1", "status": "online", "maxmem": 64 << 30,
                 "mem": 8 << 30, "maxcpu": 16, "cpu": 0.25, "id": "node/pve1"},
                {"type": "node", "node": "pve2", "status": "offline", "id": "node/pve2"},
                {"type": "qemu", "vmid": 120, "name": "web", "node": "pve1",
                 "status": "running", "maxmem": 4 << 30, "mem": 2 << 30, "maxcpu": 2,
                 "template": 0, "tags": "prod;web,eu west", "pool": "apps",
                 "hastate": "started", "lock": "backup", "id": "qemu/120"},
                {"type": "qemu", "vmid": 9000, "name": "tpl", "node": "pve2",
                 "status": "stopped", "maxmem": 1 << 30, "template": 1, "id": "qemu/9000"},
                {"type": "storage", "storage": "local", "node": "pve1", "id": "storage/pve1/local"},
                {"type": "lxc", "vmid": 200, "node": "pve1", "status": "running"},
            ]
        ),
    )  # fmt: skip
    inventory = make_client(fake, certificate).inventory()
    assert len(fake.seen) == 1
    assert [(n.name, n.online, n.max_cpu) for n in inventory.nodes] == [
        ("pve1", True, 16),
        ("pve2", False, 0),
    ]
    web = inventory.vm(120)
    assert web is not None
    assert (web.running, web.ha_managed, web.lock, web.pool, web.cpus) == (
        True,
        True,
        "backup",
        "apps",
        2,
    )
    assert web.tags == frozenset({"prod", "web", "eu", "west"})
    template = inventory.vm(9000)
    assert template is not None and template.template and not template.ha_managed
    assert inventory.vm(200) is None
    assert inventory.taken_at > 0


def test_task_log_is_paged(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    path = f"nodes/pve1/tasks/{QMIGRATE}/log"
    first = [{"n": i + 1, "t": f"line {i}"} for i in range(500)]
    fake.on("GET", path, Reply(data=first), Reply(data=[{"n": 501, "t": "TASK OK"}]))
    lines = make_client(fake, certificate).task_log("pve1", QMIGRATE)
    assert lines[0] == "line 0" and lines[-1] == "TASK OK" and len(lines) == 501
    assert [call.query["start"] for call in fake.calls("GET", path)] == [["0"], ["500"]]


def test_find_migration_task_picks_first_matching(
    fake: FakePve, certificate: tuple[Path, Path]
) -> None:
    since = 0x67C2E000
    later = QMIGRATE.replace("67C2E0A0", "67C2E0F0")
    before = QMIGRATE.replace("67C2E0A0", "67C2DF00")
    other_vm = QMIGRATE.replace(":120:", ":121:").replace("67C2E0A0", "67C2E001")
    fake.on(
        "GET",
        "nodes/pve1/tasks",
        Reply(
            data=[
                {"upid": later, "starttime": 0x67C2E0F0},
                {"upid": QMIGRATE, "starttime": 0x67C2E0A0},
                {"upid": before, "starttime": 0x67C2DF00},
                {"upid": other_vm, "starttime": 0x67C2E001},
            ]
        ),
    )
    client = make_client(fake, certificate)
    assert client.find_migration_task(120, "pve1", since) == QMIGRATE
    [call] = fake.calls("GET", "nodes/pve1/tasks")
    assert call.query["typefilter"] == ["qmigrate"]
    assert call.query["vmid"] == ["120"] and call.query["since"] == [str(since)]
    fake.on("GET", "nodes/pve1/tasks", Reply(data=[]))
    assert client.find_migration_task(120, "pve1", since) is None


def test_stop_task_and_unlock(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on("DELETE", f"nodes/pve2/tasks/{QMIGRATE}", Reply(data=None))
    fake.on("PUT", "nodes/pve2/qemu/120/config", Reply(data=None))
    client = make_client(fake, certificate)
    client.stop_task("pve2", QMIGRATE)
    client.unlock_vm("pve2", 120)
    [put] = fake.calls("PUT", "nodes/pve2/qemu/120/config")
    assert put.form == {"delete": ["lock"], "skiplock": ["1"]}
    assert len(fake.calls("DELETE", f"nodes/pve2/tasks/{QMIGRATE}")) == 1


def test_precondition(fake: FakePve, certificate: tuple[Path, Path]) -> None:
    fake.on(
        "GET",
        "nodes/pve1/qemu/120/migrate",
        Reply(
            data={
                "running": 1,
                "allowed_nodes": ["pve2"],
                "not_allowed_nodes": {"pve3": {"unavailable_storages": ["fast"]}},
                "local_disks": [{"volid": "local-lvm:vm-120-disk-0", "size": 1}],
                "local_resources": ["hostpci0"],
            }
        ),
    )
    check = make_client(fake, certificate).precondition("pve1", 120, "pve3")
    assert fake.seen[0].query == {"target": ["pve3"]}
    assert check.blockers("pve3") == [
        "uses local devices: hostpci0",
        "has local disks: local-lvm:vm-120-disk-0",
        "not allowed on pve3: storage fast unavailable",
    ]
    assert check.blockers("pve2", with_local_disks=True) == ["uses local devices: hostpci0"]


async def test_async_client_does_not_block_the_loop(
    fake: FakePve, certificate: tuple[Path, Path]
) -> None:
    fake.on("GET", "version", Reply(data={"version": "8.4.1"}, delay=0.3))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with AsyncPveClient(make_client(fake, certificate), max_workers=1) as client:
        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        answers = await asyncio.gather(client.version(), client.version())
        elapsed = time.monotonic() - started
        ticking.cancel()
    assert answers == [{"version": "8.4.1"}] * 2
    assert elapsed >= 0.55  # one worker: the two calls ran one after the other
    assert ticks >= 20  # the loop kept running meanwhile


def test_lost_answer_to_migration_post_is_flagged_not_repeated(
    fake: FakePve, certificate: tuple[Path, Path]
) -> None:
    fake.on("POST", "nodes/pve1/qemu/120/migrate", Reply(data=QMIGRATE, delay=0.5))
    fake.on("GET", "version", Reply(data={"version": "8.4.1"}, delay=0.5), Reply(data={}))
    client = PveClient(
        [f"127.0.0.1:{fake.port}"],
        TOKEN,
        ca_bundle=str(certificate[0]),
        timeout=0.2,
        retry=RequestRetry(attempts=2, base_delay=0.01),
    )
    with pytest.raises(PveUnreachable, match="no answer from") as raised:
        client.migrate("pve1", 120, "pve2")
    assert raised.value.request_may_have_arrived
    assert len(fake.calls("POST", "nodes/pve1/qemu/120/migrate")) == 1
    assert client.version() == {}  # an idempotent GET is simply asked again
    assert len(fake.calls("GET", "version")) == 2
