"""docs/metrics.md is what hack/gen-metrics-doc.py makes of the code today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_doc_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen-metrics-doc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
