"""Paired bootstrap over videos: analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.metrics import paired_bootstrap


def test_a_constant_difference_has_a_zero_width_interval():
    a = np.array([3.0, 5.0, 8.0, 1.0])
    out = paired_bootstrap(a, a - 0.5)
    assert out == {"mean": pytest.approx(0.5), "low": pytest.approx(0.5),
                   "high": pytest.approx(0.5), "n": 4}  # fmt: skip


def test_interval_holds_the_mean_shrinks_with_more_videos_and_is_deterministic():
    rng = np.random.default_rng(1)
    small = paired_bootstrap(rng.normal(1.0, 1.0, 20), np.zeros(20))
    big = paired_bootstrap(rng.normal(1.0, 1.0, 2000), np.zeros(2000))
    for out in (small, big):
        assert out["low"] <= out["mean"] <= out["high"]
    assert big["high"] - big["low"] < 0.5 * (small["high"] - small["low"])
    assert big["low"] > 0.0 and big["high"] < 2.0  # the true mean 1 is inside, 0 is not
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)


def test_nan_pairs_are_left_out_and_bad_input_is_refused():
    out = paired_bootstrap([1.0, np.nan, 3.0], [0.0, 0.0, np.nan])
    assert out["n"] == 1 and out["mean"] == 1.0
    assert paired_bootstrap([np.nan], [1.0])["mean"] is None
    with pytest.raises(ValueError, match="pair"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([1.0], [1.0], level=1.0)
