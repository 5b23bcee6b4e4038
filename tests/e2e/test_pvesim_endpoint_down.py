"""pvesim's endpoint_down takes an endpoint away as a node that is off: open keep-alive
connections close too, so a client's failover mid-session is really exercised."""

from __future__ import annotations

import http.client
import ssl

import pytest

from pvesim.testing import PvesimProcess


def test_endpoint_down_closes_open_keep_alive_connections() -> None:
    with PvesimProcess(
        "--nodes", "2", "--vms-per-node", "1", "--time-scale", "100", "--endpoints", "2"
    ) as sim:  # fmt: skip
        host, port = sim.urls[1].removeprefix("https://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=sim.ca_cert)
        session = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
        headers = {"Authorization": f"PVEAPIToken={sim.token_id}={sim.token_secret}"}
        session.request("GET", "/api2/json/version", headers=headers)
        answer = session.getresponse()
        answer.read()
        assert answer.status == 200 and not answer.will_close
        sim.fault(endpoint_down=1)  # sent through endpoint 0
        try:
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                session.request("GET", "/api2/json/version", headers=headers)
                session.getresponse().read()
        finally:
            session.close()
            sim.fault(endpoint_up=1)
