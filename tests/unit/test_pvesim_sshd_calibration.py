"""The modeled sshd answers to the real one: with its default parameters, the model's drop
shares of N secure migrations fired at once into one target stay within 1.25x of those
measured with real OpenSSH (bench/sshd_real.json, recorded by
`python -m bench.sshd_calibration --real`)."""

from __future__ import annotations

import json

import pytest
from bench.sshd_calibration import DATA, model_shares

from pvesim.model.params import SshdParams

BAND = 1.25
REAL = json.loads(DATA.read_text())


def test_the_recorded_figures_say_how_they_were_measured() -> None:
    assert {"how", "openssh", "machine", "date"} <= REAL.keys()
    for n in ("16", "32"):
        runs = REAL["sizes"][n]["runs"]
        assert len(runs) >= 3
        assert all("load1" in run for run in runs)


@pytest.mark.parametrize("n", [16, 32])
@pytest.mark.parametrize("step", ["/bin/true", "total"])
def test_default_model_drop_share_within_band_of_real_sshd(n: int, step: str) -> None:
    real = REAL["sizes"][str(n)]["mean"][step]
    modeled = model_shares(n, SshdParams())[step]
    assert real / BAND <= modeled <= real * BAND, (n, step, real, modeled)
