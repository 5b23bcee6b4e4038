"""`ModelClient`: the operator's PVE client answered in-process by pvesim's model.

The operator's own `PveClient` shapes every request (paths, parameters, paging, parsing);
only the transport is replaced: instead of HTTPS to `pvesim serve`, each request goes
through pvesim's route table (`pvesim.api.router`, the code behind the HTTPS server) with
the parameters as strings and the answer as JSON, as the server would see and send them.
So library mode exercises the same client code as the operator, and counts each request by
the route the server would count it under. No virtual time passes inside a request.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from proxmigrate.pve.async_client import AsyncPveClient
from proxmigrate.pve.client import PveClient
from proxmigrate.pve.errors import PveApiError
from proxmigrate.pve.transport import PveTransport, TokenAuth
from pvesim.api import router
from pvesim.auth import TOKEN_ID  # an API token, as the operator uses: never root@pam
from pvesim.model import ApiError, Cluster
from pvesim.routing import Pending
from pvesim.server import route_pattern

_ENDPOINT = "pvesim.invalid"  # never connected to: requests go to the model

_T = TypeVar("_T")


class ModelTransport(PveTransport):
    """Sends `PveClient`'s requests to the model's router instead of an endpoint."""

    def __init__(self, cluster: Cluster, requests: Counter[str]) -> None:
        super().__init__([_ENDPOINT], TokenAuth(TOKEN_ID, "unused"))
        self.model = cluster
        self.requests = requests
        self.model_cpu_seconds = 0.0  # spent answering (the server's work, not the operator's)

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any:
        path = path.strip("/")
        self.requests[f"{method} /{route_pattern(path)}"] += 1
        began = time.process_time()
        try:
            data = router.dispatch(self.model, method, path, TOKEN_ID, _as_form(params))
            if isinstance(data, Pending):  # a task's DELETE: answered at once, time stands
                data = data.data
            return json.loads(json.dumps(data))
        except ApiError as error:
            raise _as_client_error(error) from error
        finally:
            self.model_cpu_seconds += time.process_time() - began


class ModelClient(AsyncPveClient):
    """`AsyncPveClient` over `ModelTransport`; calls run inline (no thread pool): the model
    is not thread-safe and the caller's virtual clock must not move during a call."""

    def __init__(self, cluster: Cluster, clock: Callable[[], float]) -> None:
        self.requests: Counter[str] = Counter()
        self.transport = ModelTransport(cluster, self.requests)
        super().__init__(
            PveClient([_ENDPOINT], self.transport.auth, transport=self.transport, clock=clock)
        )

    @property
    def model_cpu_seconds(self) -> float:
        return self.transport.model_cpu_seconds

    async def _run(self, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return call(*args, **kwargs)


def _as_form(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Parameters as they arrive over HTTP: strings, unset ones left out (as requests does)."""
    return {key: str(value) for key, value in (params or {}).items() if value is not None}


def _as_client_error(error: ApiError) -> PveApiError:
    """What `PveTransport` raises for this HTTP error: the server sends the message as the
    reason phrase (one line), proxmoxer hands it on with the per-parameter errors."""
    reason = error.message.replace("\n", " ").strip()
    errors = {key: value for key, value in (error.errors or {}).items() if isinstance(value, str)}
    return PveApiError(error.status, reason, errors)
