"""A loopback reverse proxy in front of kube-apiserver that can misbehave on cue.

The operator talks plain HTTP to it; it forwards over TLS with the test's admin identity,
streaming watch answers chunk by chunk. Faults: answer status writes of VMMigrations with
500/409/429 for a while, or black-hole everything (requests and open streams hang, nothing
is refused: what a dropped route or a dead NAT entry looks like to a client).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
    "accept-encoding",
    "upgrade",
}


class ApiProxy:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self.upstream = cluster["server"]
        self._tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self.blackhole_until = 0.0
        self.refuse_until = 0.0
        self.refused = 0
        self._statuses = itertools.cycle((500, 409, 429))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    # ----- faults -------------------------------------------------------------------------

    def refuse_status_writes(self, seconds: float) -> None:
        self.refuse_until = time.monotonic() + seconds

    def blackhole(self, seconds: float) -> None:
        self.blackhole_until = time.monotonic() + seconds

    def _blackholed(self) -> float:
        return max(0.0, self.blackhole_until - time.monotonic())

    # ----- serving ------------------------------------------------------------------------

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "anonymous", "user": {}}],
                    "contexts": [
                        {"name": "proxy", "context": {"cluster": "proxy", "user": "anonymous"}}
                    ],
                    "current-context": "proxy",
                }
            )
        )
        return path

    def __enter__(self) -> ApiProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the API proxy did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        connector = aiohttp.TCPConnector(ssl=self._tls, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self._session = session
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        while (hang := self._blackholed()) > 0:
            await asyncio.sleep(hang)
        if (
            request.method == "PATCH"
            and request.path.endswith("/status")
            and "/vmmigrations/" in request.path
            and time.monotonic() < self.refuse_until
        ):
            self.refused += 1
            code = next(self._statuses)
            body: dict[str, Any] = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"chaos: status write refused ({code})",
                "code": code,
            }
            headers = {"Retry-After": "1"} if code == 429 else {}
            return web.json_response(body, status=code, headers=headers)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        data = await request.read()
        answer = None
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=data,
                skip_auto_headers=("Content-Type",),  # none given: add none (else 415)
            ) as upstream:
                answer = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                    },
                )
                await answer.prepare(request)
                async for chunk in upstream.content.iter_any():
                    while (hang := self._blackholed()) > 0:
                        await asyncio.sleep(hang)
                    await answer.write(chunk)
                await answer.write_eof()
                return answer
        except (aiohttp.ClientError, ConnectionResetError) as error:
            if answer is not None and answer.prepared:
                return answer  # cut mid-stream: the client sees the stream end
            return web.Response(status=502, text=f"chaos proxy: upstream: {error}")
