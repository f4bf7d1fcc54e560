"""One Euro filter: the paper's equations on step, noise and ramp inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.animation.one_euro import KEYPOINT_PARAMS, OneEuroFilter, OneEuroParams


def test_first_sample_passes_and_constant_is_kept() -> None:
    f = OneEuroFilter(KEYPOINT_PARAMS)
    x = np.arange(478 * 2, dtype=np.float64).reshape(478, 2)
    assert np.array_equal(f(x, 0.0), x)
    for i in range(1, 10):
        assert np.allclose(f(x, i / 30), x)


def test_beta_zero_is_a_first_order_low_pass() -> None:
    """With beta = 0, a unit step after n samples at rate r is 1 − (1 − α)^n,
    α = 1 / (1 + τ·r), τ = 1 / (2π·min_cutoff)."""
    rate, fc = 30.0, 2.0
    f = OneEuroFilter(OneEuroParams(min_cutoff=fc, beta=0.0))
    f(np.zeros(1), 0.0)
    alpha = 1.0 / (1.0 + rate / (2 * math.pi * fc))
    for n in range(1, 20):
        y = f(np.ones(1), n / rate)[0]
        assert y == pytest.approx(1 - (1 - alpha) ** n, rel=1e-12)


def test_removes_jitter_at_rest_and_follows_fast_motion() -> None:
    rng = np.random.default_rng(0)
    rate = 60.0
    t = np.arange(240) / rate
    noise = rng.normal(0.0, 1.0, (240, 478, 2))
    still = OneEuroFilter(KEYPOINT_PARAMS)
    out = np.stack([still(100.0 + noise[i], t[i]) for i in range(240)])
    assert out[60:].std() < 0.35 * noise[60:].std()
    # a fast ramp (300 px/s): beta keeps the lag small compared with beta = 0
    ramp = 300.0 * t
    lag = {}
    for beta in (0.0, KEYPOINT_PARAMS.beta):
        f = OneEuroFilter(OneEuroParams(KEYPOINT_PARAMS.min_cutoff, beta, 1.0))
        y = np.array([f(np.array([v]), ti)[0] for v, ti in zip(ramp, t)])
        lag[beta] = float(np.mean(ramp[120:] - y[120:]))
    assert lag[KEYPOINT_PARAMS.beta] < 0.25 * lag[0.0]


def test_errors_and_reset() -> None:
    f = OneEuroFilter()
    f(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="increase"):
        f(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="shape"):
        f(np.zeros(4), 2.0)
    f.reset()
    assert np.array_equal(f(np.ones(4), 0.5), np.ones(4))
    with pytest.raises(ValueError):
        OneEuroParams(min_cutoff=0.0)
