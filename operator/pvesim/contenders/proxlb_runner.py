"""Run the real ProxLB (PyPI `proxlb`, pinned in pyproject.toml) once against a pvesim process.

ProxLB 2.3.0 reads one YAML file (`-c`), balances once and exits when `service.daemon` is
false. It only offers `ssl_verification: true|false`; with `true`, proxmoxer leaves
`verify=True` to requests, which then trusts the bundle in `REQUESTS_CA_BUNDLE`: that is how
it trusts pvesim's self-signed CA here, with verification on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from pvesim.testing import PvesimProcess

# ProxLB's log format (proxlb/utils/logger.py) and its migration line (models/balancing.py).
_LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"
_MIGRATION_LINE = re.compile(
    r"^(?P<time>\S+ \S+) - ProxLB - INFO - Balancing: Starting to migrate VM guest "
    r"(?P<guest>\S+) from (?P<source>\S+) to (?P<target>\S+)\.$"
)
_ERROR_LINE = re.compile(r"^\S+ \S+ - ProxLB - (ERROR|CRITICAL) - ")
_API_TIMEOUT = 10  # real seconds per API request
_STOP_GRACE = 5.0  # real seconds between SIGINT (ProxLB's clean exit) and SIGKILL


@dataclass(frozen=True)
class ProxlbMigration:
    """A migration ProxLB logged as started, `after` real seconds into its run."""

    guest: str
    source: str
    target: str
    after: float


@dataclass(frozen=True)
class ProxlbResult:
    exit_code: int
    timed_out: bool  # stopped by us: `exit_code` is then whatever the signal left
    duration: float  # real seconds from start to exit
    migrations: list[ProxlbMigration]
    errors: list[str]  # ProxLB's ERROR/CRITICAL lines
    log_tail: list[str]


def proxlb_config(
    sim: PvesimProcess,
    maintenance_nodes: Sequence[str],
    parallel_jobs: int,
    *,
    log_level: str = "INFO",
) -> dict[str, Any]:
    """ProxLB's YAML config (its docs/03_configuration.md) for one balancing round.

    Everything else keeps ProxLB's defaults (memory, mode `used`, live, with local disks),
    except the API timeout: ProxLB's 1 s default is too tight for a loaded test machine."""
    return {
        "proxmox_api": {
            "hosts": [urllib.parse.urlsplit(url).netloc for url in sim.urls],
            "user": sim.token_user,
            "token_id": sim.token_name,
            "token_secret": sim.token_secret,
            "ssl_verification": True,
            "timeout": _API_TIMEOUT,
        },
        "proxmox_cluster": {"maintenance_nodes": list(maintenance_nodes)},
        "balancing": {
            "enable": True,
            "balance_types": ["vm"],
            "parallel": parallel_jobs > 1,
            "parallel_jobs": parallel_jobs,
        },
        "service": {"daemon": False, "log_level": log_level},
    }


def run_proxlb(
    sim: PvesimProcess,
    maintenance_nodes: Sequence[str],
    parallel_jobs: int,
    timeout: float,
    *,
    log_level: str = "INFO",
    tail_lines: int = 40,
) -> ProxlbResult:
    """Run `python -m proxlb -c CONFIG` once; stop it if it outlives `timeout` real seconds."""
    config = proxlb_config(sim, maintenance_nodes, parallel_jobs, log_level=log_level)
    with tempfile.TemporaryDirectory(prefix="proxlb-") as tmp:
        config_path = Path(tmp) / "proxlb.yaml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = Path(tmp) / "proxlb.log"
        started_at = datetime.now()
        started = time.monotonic()
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxlb", "-c", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_environment(sim),
            )
            timed_out = _wait_or_stop(proc, timeout)
        duration = time.monotonic() - started
        lines = log_path.read_text(errors="replace").splitlines()
    return ProxlbResult(
        exit_code=proc.returncode,
        timed_out=timed_out,
        duration=duration,
        migrations=_migrations(lines, started_at),
        errors=[line for line in lines if _ERROR_LINE.match(line)],
        log_tail=lines[-tail_lines:],
    )


def _environment(sim: PvesimProcess) -> dict[str, str]:
    env = dict(os.environ)
    env["REQUESTS_CA_BUNDLE"] = sim.ca_cert
    no_proxy = [p for p in env.get("NO_PROXY", "").split(",") if p] + [sim.host]
    env["NO_PROXY"] = ",".join(no_proxy)  # loopback only, never through a proxy
    return env


def _wait_or_stop(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True if ProxLB had to be stopped: SIGINT first (its handler exits cleanly)."""
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=_STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return True


def _migrations(lines: list[str], started_at: datetime) -> list[ProxlbMigration]:
    found = []
    for line in lines:
        match = _MIGRATION_LINE.match(line)
        if match:
            at = datetime.strptime(match["time"], _LOG_TIME)
            found.append(
                ProxlbMigration(
                    guest=match["guest"],
                    source=match["source"],
                    target=match["target"],
                    after=(at - started_at).total_seconds(),
                )
            )
    return found
