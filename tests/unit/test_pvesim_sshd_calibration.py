"""The modeled sshd answers to the real one: LOOPBACK_FIT's drop shares of N secure migrations
fired at once into one target stay within 1.25x of those measured with real OpenSSH
(bench/sshd_real.json, recorded by `python -m bench.sshd_calibration --real`)."""

from __future__ import annotations

import json

import pytest
from bench.sshd_calibration import DATA, model_shares

from pvesim.model.params import LOOPBACK_FIT

BAND = 1.25
REAL = json.loads(DATA.read_text())


def test_the_recorded_figures_say_how_they_were_measured() -> None:
    assert {"how", "openssh", "machine", "date"} <= REAL.keys()
    for n in ("16", "32"):
        assert len(REAL["sizes"][n]["runs"]) >= 3


@pytest.mark.parametrize("n", [16, 32])
@pytest.mark.parametrize("step", ["/bin/true", "total"])
def test_fitted_model_drop_share_within_band_of_real_sshd(n: int, step: str) -> None:
    real = REAL["sizes"][str(n)]["mean"][step]
    modeled = model_shares(n, LOOPBACK_FIT)[step]
    assert real / BAND <= modeled <= real * BAND, (n, step, real, modeled)
