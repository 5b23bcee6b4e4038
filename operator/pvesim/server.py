"""The HTTPS front: PVE's envelope, auth and faults around a locked model on a scaled clock."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pvesim.api import router
from pvesim.auth import Credentials
from pvesim.certs import CertFiles
from pvesim.clock import ScaledClock
from pvesim.model import ROOT, ApiError, Cluster
from pvesim.routing import Pending, TotalList
from pvesim.simapi import sim_route

TICK = 0.05  # real seconds between background advances


class Simulator:
    """The model, its lock, its clock and the pace figures; shared by every listener."""

    def __init__(self, cluster: Cluster, scale: float, seed: int) -> None:
        self.cluster = cluster
        self.lock = threading.Lock()
        self.clock = ScaledClock(cluster.now, scale)
        self.credentials = Credentials.fresh(cluster.access.tokens)
        self.fault_rng = random.Random(seed + 1)  # faults never perturb the model's RNG
        self.max_lag = 0.0  # simulated seconds the model fell behind the clock, worst seen
        self.busy = 0.0  # real seconds spent advancing
        self.listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pvesim-clock", daemon=True)

    def sync(self) -> None:
        """Advance the model to "now"; call with the lock held."""
        began = time.monotonic()
        target = self.clock.now()
        self.cluster.advance_to(target)
        self.busy += time.monotonic() - began
        self.max_lag = max(self.max_lag, self.clock.now() - target - TICK * self.clock.scale)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            with self.lock:
                self.sync()

    def pace(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.clock.real_start
        return {
            "time_scale": self.clock.scale,
            "sim_now": self.clock.now(),
            "model_now": self.cluster.now,
            "max_lag_sim_seconds": max(0.0, self.max_lag),
            "busy_share": self.busy / elapsed if elapsed > 0 else 0.0,
        }


class Listener:
    """One API endpoint (a PVE node's pveproxy); can be taken down and brought back.

    Down means gone, as a node that is off: no new connection, and every open keep-alive
    connection closed (but the one asking for it, which is answered and then closed)."""

    def __init__(self, sim: Simulator, host: str, port: int, certs: CertFiles) -> None:
        self.sim, self.host, self.port, self.certs = sim, host, port, certs
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.connections: dict[socket.socket, threading.Thread] = {}  # open, and who serves it
        self.connections_lock = threading.Lock()
        self.closing: threading.Thread | None = None  # releases the port after `down`

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def up(self) -> None:
        if self.httpd is not None:
            return
        if self.closing is not None:  # the port is free once the last `down` is through
            self.closing.join()
        handler = type("BoundHandler", (ApiHandler,), {"sim": self.sim, "listener": self})
        httpd = ThreadingHTTPServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        self.httpd = httpd
        self.thread = threading.Thread(target=httpd.serve_forever, args=(0.1,), daemon=True)
        self.thread.start()

    def down(self) -> None:
        if self.httpd is None:
            return
        httpd, self.httpd = self.httpd, None
        with self.connections_lock:
            others = [c for c, t in self.connections.items() if t is not threading.current_thread()]
        for connection in others:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.closing = threading.Thread(target=_close, args=(httpd,), daemon=True)
        self.closing.start()


def _close(httpd: ThreadingHTTPServer) -> None:
    """Stop serving and release the port (off the request thread: shutdown() blocks)."""
    httpd.shutdown()
    httpd.server_close()


class ApiHandler(BaseHTTPRequestHandler):
    sim: Simulator
    listener: Listener
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the simulator's stdout carries only the JSON line."""

    def setup(self) -> None:
        super().setup()
        with self.listener.connections_lock:
            self.listener.connections[self.connection] = threading.current_thread()

    def finish(self) -> None:
        with self.listener.connections_lock:
            self.listener.connections.pop(self.connection, None)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _params(self, query: str) -> dict[str, str]:
        params = dict(parse_qsl(query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length).decode()
            if "json" in (self.headers.get("Content-Type") or ""):
                loaded = json.loads(body or "{}")
                params |= {k: _scalar(v) for k, v in loaded.items()}
            else:
                params |= dict(parse_qsl(body, keep_blank_values=True))
        return params

    def _handle(self, method: str) -> None:
        if self.listener.httpd is None:  # a keep-alive request that raced `down`: gone
            self.close_connection = True
            return
        url = urlsplit(self.path)
        try:
            params = self._params(url.query)
        except (ValueError, UnicodeDecodeError):
            self._send(400, {"data": None}, "Bad Request")
            return
        path = unquote(url.path)
        if path.startswith("/_sim/"):
            with self.sim.lock:
                self.sim.sync()
                try:
                    status, body = sim_route(self.sim, self.listener, method, path[6:], params)
                except ApiError as exc:
                    status, body = exc.status, {"error": exc.message}
            self._send(status, body, "OK" if status < 400 else str(body.get("error")))
            self.close_connection = self.close_connection or self.listener.httpd is None
            return
        if not path.startswith("/api2/json/"):
            self._send(501, {"data": None}, "Not Implemented")
            return
        api_path = path[len("/api2/json/") :].strip("/")
        self._api(method, api_path, params)

    def _api(self, method: str, api_path: str, params: dict[str, str]) -> None:
        sim = self.sim
        faults = sim.cluster.api_faults
        if faults.latency:
            time.sleep(faults.latency)
        with sim.lock:
            sim.sync()
            sim.cluster.api_requests[f"{method} /{route_pattern(api_path)}"] += 1
            try:
                if faults.error_rate and sim.fault_rng.random() < faults.error_rate:
                    raise ApiError(faults.error_status, "simulated server error")
                if api_path == "access/ticket" and method == "POST":
                    data: Any = self._login(params)
                else:
                    user = self._authenticate(method)
                    data = router.dispatch(sim.cluster, method, api_path, user, params)
                    if isinstance(data, Pending):
                        data = self._await(data)
                body: dict[str, Any] = {"data": data}
                if isinstance(data, TotalList):
                    body["total"] = data.total
                status, reason = 200, "OK"
            except ApiError as exc:
                status, reason = exc.status, exc.message
                body = {"data": None, "message": exc.message + "\n"}
                if exc.errors:
                    body["errors"] = exc.errors
        self._send(status, body, reason)

    def _await(self, pending: Pending) -> Any:
        """Hold the answer until `pending` is ready (a task's DELETE blocks until its worker
        is gone), letting the model advance meanwhile; call with the lock held."""
        sim = self.sim
        while not pending.ready():
            sim.lock.release()
            try:
                time.sleep(TICK)
            finally:
                sim.lock.acquire()
            sim.sync()
        return pending.data

    def _login(self, params: dict[str, str]) -> dict[str, Any]:
        sim = self.sim
        creds = sim.credentials
        user = params.get("username", "")
        if "@" not in user and params.get("realm"):
            user = f"{user}@{params['realm']}"
        password = params.get("password", "")
        now = sim.cluster.now
        valid = user == ROOT and password == creds.password
        if not valid and password.startswith("PVE:"):
            try:
                valid = (
                    creds.check_ticket(password, now, sim.cluster.api_faults.ticket_epoch) == user
                )
            except ApiError:
                valid = False
        if not valid:
            raise ApiError(401, "authentication failure")
        return {
            "username": user,
            "ticket": creds.ticket(user, now, sim.cluster.api_faults.ticket_epoch),
            "CSRFPreventionToken": creds.csrf(user, now),
            "cap": {"vms": {}, "nodes": {}, "access": {}, "dc": {}, "storage": {}, "sdn": {}},
        }

    def _authenticate(self, method: str) -> str:
        creds = self.sim.credentials
        header = self.headers.get("Authorization") or ""
        if header.startswith("PVEAPIToken="):
            # the token id is the user (AccessControl verify_token): never root@pam
            return creds.check_token(header[len("PVEAPIToken=") :])
        cookie = _cookie(self.headers.get("Cookie") or "", "PVEAuthCookie")
        if not cookie:
            raise ApiError(401, "No ticket")
        user = creds.check_ticket(
            cookie, self.sim.cluster.now, self.sim.cluster.api_faults.ticket_epoch
        )
        if method != "GET":
            creds.check_csrf(self.headers.get("CSRFPreventionToken"), user)
        return user

    def _send(self, status: int, body: Any, reason: str) -> None:
        payload = json.dumps(body).encode()
        reason = reason.replace("\n", " ").strip().encode("latin-1", "replace").decode("latin-1")
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "max-age=0")
        self.end_headers()
        self.wfile.write(payload)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return unquote(value)
    return None


def route_pattern(api_path: str) -> str:
    """Group request counts by route: ids and UPIDs become placeholders."""
    parts = api_path.split("/")
    out = []
    for i, part in enumerate(parts):
        prev = parts[i - 1] if i else ""
        if prev == "nodes":
            out.append("{node}")
        elif prev in ("qemu", "lxc") and part.isdigit():
            out.append("{vmid}")
        elif prev == "tasks" and part.startswith("UPID:"):
            out.append("{upid}")
        elif prev == "resources" and ":" in part:
            out.append("{sid}")
        else:
            out.append(part)
    return "/".join(out)
