"""Shared test set-up: import packages live under operator/ (see docs/architecture.md)."""

import sys
from pathlib import Path

OPERATOR_DIR = Path(__file__).resolve().parents[1] / "operator"
if str(OPERATOR_DIR) not in sys.path:
    sys.path.insert(0, str(OPERATOR_DIR))
