"""The modeled sshd answers to the real one: with its default parameters, the model's drop
shares of N secure migrations fired at once into one target stay within the band of those
measured with real OpenSSH (bench/sshd_real.json, recorded by
`python -m bench.sshd_calibration --real`) at every N: 1.25x either side, or the real share's
95 % interval where it is rare (bench.sshd_calibration.band)."""

from __future__ import annotations

import json
from functools import cache

import pytest
from bench.sshd_calibration import DATA, SIZES, STEPS, band, in_band, model_shares

from pvesim.model.params import SshdParams

REAL = json.loads(DATA.read_text())


@cache
def modeled(n: int) -> dict[str, float]:
    return model_shares(n, SshdParams())


def test_the_recorded_figures_say_how_they_were_measured() -> None:
    assert {"how", "openssh", "machine", "date"} <= REAL.keys()
    for n in map(str, SIZES):
        runs = REAL["sizes"][n]["runs"]
        assert len(runs) >= 3
        assert all("load1" in run for run in runs)


CELLS = [(n, step) for n in SIZES for step in [*STEPS, "total"]]


@pytest.mark.parametrize(("n", "step"), CELLS)
def test_default_model_drop_share_within_band_of_real_sshd(n: int, step: str) -> None:
    real = REAL["sizes"][str(n)]
    low, high = band(real["mean"][step], n * len(real["runs"]))
    assert in_band(real, n, step, modeled(n)[step]), (n, step, (low, high), modeled(n)[step])


def test_the_band_is_a_ratio_for_common_shares_and_the_interval_for_rare_ones() -> None:
    assert band(0.2, 500) == pytest.approx((0.16, 0.25))
    low, high = band(0.0, 272)  # no drop in 272: up to about 1.4 % is as likely
    assert low == 0.0 and 0.010 < high < 0.016
    low, high = band(0.03, 272)
    assert 0.01 < low < 0.03 < high < 0.07
