"""One PVE API request, made robust: endpoint failover, retries, auth renewal, counting.

Safety rule: a request that may start work on PVE (a migration POST) is never repeated
once it may have reached a server, because a second POST could migrate the VM twice. Only
idempotent requests are retried after a 5xx or a lost answer; every request is retried
and failed over when the connection could not be opened (nothing was sent).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException

from proxmigrate.endpoint import Endpoint
from proxmigrate.pve.errors import PveApiError, PveAuthError, PveError, PveTLSError, PveUnreachable


@dataclass(frozen=True)
class TokenAuth:
    """PVE API token (recommended): `token_id` is `user@realm!name`."""

    token_id: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        user, _, name = self.token_id.partition("!")
        if "@" not in user or not name:
            raise ValueError(f"token id {self.token_id!r} is not of the form user@realm!name")


@dataclass(frozen=True)
class PasswordAuth:
    """Ticket auth from a password; the ticket is renewed on a 401."""

    username: str  # user@realm
    password: str = field(repr=False)


Auth = TokenAuth | PasswordAuth


def is_root_ticket(auth: Auth) -> bool:
    """PVE lets only `root@pam` itself (not a token of it) pick the migration transport."""
    return isinstance(auth, PasswordAuth) and auth.username == "root@pam"


@dataclass(frozen=True)
class RequestRetry:
    """How one API request is retried: `attempts` rounds over all endpoints, with full-jitter
    exponential backoff between them (a migration's own retries are the engine's
    `RetryPolicy`)."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, round_index: int, unit_random: float) -> float:
        return unit_random * min(self.max_delay, self.base_delay * 2.0**round_index)


class _TryNext(Exception):
    """This endpoint failed in a way another endpoint or a later round may not."""

    def __init__(self, error: PveError) -> None:
        super().__init__(str(error))
        self.error = error


ApiFactory = Callable[..., Any]
# Told of every answer PVE gives (HTTP method, status; 0 for a login refused without one):
# the operator counts them in its metrics, which this adapter does not know.
AnswerCounter = Callable[[str, int], None]


class PveTransport:
    """Sends requests through proxmoxer's HTTPS backend to the first endpoint that answers."""

    def __init__(
        self,
        endpoints: Sequence[str],
        auth: Auth,
        *,
        on_answer: AnswerCounter | None = None,
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        retry: RequestRetry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        unit_random: Callable[[], float] = random.random,
        api_factory: ApiFactory = ProxmoxAPI,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one PVE endpoint is needed")
        self.endpoints = tuple(Endpoint.parse(e) for e in endpoints)
        self.auth = auth
        self._on_answer = on_answer
        # proxmoxer hands verify_ssl to requests as `verify`, which also takes a CA bundle path.
        self._verify: bool | str = (ca_bundle or True) if verify_tls else False
        self._timeout = (min(connect_timeout, timeout), timeout)
        self._retry = retry or RequestRetry()
        self._sleep = sleep
        self._unit_random = unit_random
        self._api_factory = api_factory
        self._apis: dict[Endpoint, Any] = {}
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active_endpoint(self) -> Endpoint:
        """The endpoint that answered last; requests start there."""
        return self.endpoints[self._active]

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one request and return PVE's `data`; raise a `PveError` naming the cause."""
        idempotent = method == "GET" if idempotent is None else idempotent
        last: PveError | None = None
        for round_index in range(max(1, self._retry.attempts)):
            if round_index:
                self._sleep(self._retry.delay(round_index - 1, self._unit_random()))
            tls_only = True
            for index in self._rotation():
                try:
                    result = self._send(self.endpoints[index], method, path, params, idempotent)
                except _TryNext as failure:
                    last = failure.error
                    tls_only = tls_only and isinstance(last, PveTLSError)
                    continue
                self._active = index
                return result
            if tls_only:
                break  # certificates do not fix themselves between rounds
        assert last is not None
        raise last

    def _rotation(self) -> Iterator[int]:
        start = self._active
        return ((start + offset) % len(self.endpoints) for offset in range(len(self.endpoints)))

    def _send(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        idempotent: bool,
    ) -> Any:
        for renewed in (False, True):
            try:
                resource = self._api(endpoint)(path.strip("/"))
                return getattr(resource, method.lower())(**dict(params or {}))
            except ResourceException as error:
                if error.status_code == 401 and isinstance(self.auth, PasswordAuth) and not renewed:
                    self._forget(endpoint)  # ticket expired: log in again once
                    continue
                raise self._api_error(endpoint, error, idempotent) from error
            except AuthenticationError as error:
                raise PveAuthError(
                    f"login as {self._user} rejected by {endpoint}: check username and password"
                ) from error
            except requests.exceptions.RequestException as error:
                self._count(method, 0)
                raise self._transport_error(endpoint, error, idempotent) from error
        raise AssertionError("unreachable")

    def _api_error(
        self, endpoint: Endpoint, error: ResourceException, idempotent: bool
    ) -> PveError | _TryNext:
        status = int(error.status_code)
        errors = error.errors if isinstance(error.errors, dict) else {}
        errors = {key: value for key, value in errors.items() if isinstance(value, str)}
        message = str(error.content or error.status_message or "")
        if status == 401:
            what = "API token" if isinstance(self.auth, TokenAuth) else "ticket"
            return PveAuthError(
                f"{what} for {self._user} rejected by {endpoint} (401 {message}): "
                "check the token id and secret or the password"
            )
        api_error = PveApiError(status, message, errors)
        if status >= 500 and idempotent:
            return _TryNext(api_error)
        return api_error

    def _transport_error(
        self, endpoint: Endpoint, error: requests.exceptions.RequestException, idempotent: bool
    ) -> PveError | _TryNext:
        if isinstance(error, requests.exceptions.SSLError):
            tls = PveTLSError(
                f"TLS verification failed for {endpoint}: {_root_cause(error)} "
                "(set a CA bundle that signed the PVE certificate, or skip verification)"
            )
            return _TryNext(tls)
        if _never_sent(error):
            return _TryNext(PveUnreachable(f"cannot connect to {endpoint}: {_root_cause(error)}"))
        lost = PveUnreachable(
            f"no answer from {endpoint}: {_root_cause(error)}", request_may_have_arrived=True
        )
        return _TryNext(lost) if idempotent else lost

    @property
    def _user(self) -> str:
        return self.auth.token_id if isinstance(self.auth, TokenAuth) else self.auth.username

    def _api(self, endpoint: Endpoint) -> Any:
        with self._lock:
            api = self._apis.get(endpoint)
            if api is None:
                api = self._apis[endpoint] = self._connect(endpoint)
            return api

    def _forget(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._apis.pop(endpoint, None)

    def _connect(self, endpoint: Endpoint) -> Any:
        options: dict[str, Any] = {
            "port": endpoint.port,
            "verify_ssl": self._verify,
            "timeout": self._timeout,
            "backend": "https",
        }
        if isinstance(self.auth, TokenAuth):
            user, _, name = self.auth.token_id.partition("!")
            api = self._api_factory(
                endpoint.host, user=user, token_name=name, token_value=self.auth.secret, **options
            )
        else:
            # proxmoxer logs in (POST /access/ticket) outside the session: count it here.
            try:
                api = self._api_factory(
                    endpoint.host, user=self.auth.username, password=self.auth.password, **options
                )
            except AuthenticationError as error:
                code = re.search(r"code: (\d+)", str(error))
                self._count("POST", int(code[1]) if code else 0)
                raise
            self._count("POST", 200)
        session = api._store["session"]
        session.hooks["response"].append(self._count_response)
        return api

    def _count_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._count(response.request.method or "GET", response.status_code)

    def _count(self, method: str, code: int) -> None:
        if self._on_answer is not None:
            self._on_answer(method, code)


def _never_sent(error: requests.exceptions.RequestException) -> bool:
    """True when the TCP connection was never opened, so the server saw nothing."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)  # NewConnectionError too


def _root_cause(error: BaseException) -> str:
    """The innermost useful message (requests wraps urllib3 wraps socket errors)."""
    cause: BaseException = error
    reason = getattr(error.args[0], "reason", None) if error.args else None
    if isinstance(reason, BaseException):
        cause = reason
    text = str(cause)
    refused = re.search(r"\[Errno \d+\] ([^')\]]+)", text)
    return refused[1] if refused else text
