"""Kubernetes API calls end on their own when the API server stops answering."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from kubernetes import client

from proxmigrate import kube as kube_module
from proxmigrate.kube import Kube


def test_a_call_to_an_api_server_that_never_answers_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blackhole = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    configuration.retries = 0
    monkeypatch.setattr(kube_module, "REQUEST_TIMEOUT", (1.0, 1.0))
    kube = Kube(client.ApiClient(configuration))

    async def call() -> float:
        began = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            await asyncio.wait_for(kube.patch_status("vmmigrations", "ns", "m", {}), 10)
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            await asyncio.wait_for(kube.read_secret("ns", "s"), 10)
        return time.monotonic() - began

    try:
        assert asyncio.run(call()) < 8
    finally:
        blackhole.close()
