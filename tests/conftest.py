"""Shared test set-up: import packages live under operator/ (see docs/architecture.md)."""

import os
import subprocess
import sys
from pathlib import Path

OPERATOR_DIR = Path(__file__).resolve().parents[1] / "operator"
if str(OPERATOR_DIR) not in sys.path:
    sys.path.insert(0, str(OPERATOR_DIR))


def pytest_sessionstart(session: object) -> None:
    """pvesim validates requests against PVE's API schema, fetched at provisioning time
    (`make provision`); fetch it here too so `make unit` works on a fresh machine."""
    from pvesim.schema import schema_path

    if not schema_path().exists():
        script = Path(__file__).resolve().parents[1] / "hack" / "fetch-pve-schema.sh"
        env = dict(os.environ, PYTHON=sys.executable)
        subprocess.run(["bash", str(script)], check=True, env=env)
