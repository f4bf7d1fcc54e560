"""Retargeting round trip: random expressions and poses come back from keypoints alone."""

from __future__ import annotations

import numpy as np
import pytest

from avatars.retarget import Retargeter
from avatars.rig import COEFFICIENTS, N_COEFFICIENTS, Rig, in_domain


def _random_frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    while True:
        c = rng.uniform(0.0, 1.0, N_COEFFICIENTS)
        if in_domain(c)[0]:
            break
    pose = np.array([
        np.radians(rng.uniform(-20, 20)),  # pitch
        np.radians(rng.uniform(-20, 20)),  # yaw
        np.radians(rng.uniform(-15, 15)),  # roll
        rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.85, 1.15),
    ])
    return c, pose


def test_round_trip(default_avatar) -> None:
    rig = Rig.for_avatar(default_avatar, 256)
    fit = Retargeter(default_avatar.crop_landmarks(256), 256)
    rng = np.random.default_rng(1234)
    worst_c, worst_deg = 0.0, 0.0
    for _ in range(25):
        c, pose = _random_frame(rng)
        kp = rig.keypoints(c[None], pose[None])[0]  # float32 pixels, as a tracker would give
        res = fit.fit(kp, warm_start=False)
        worst_c = max(worst_c, float(np.abs(res.coeffs - c).max()))
        worst_deg = max(worst_deg, float(np.degrees(np.abs(res.pose[:3] - pose[:3])).max()))
        assert res.rms_iod < 1e-3
    assert worst_c <= 0.05, worst_c
    assert worst_deg <= 1.0, worst_deg


def test_any_face_drives_any_avatar(default_avatar) -> None:
    """A mirrored, rescaled driver face (a different neutral) drives the default avatar."""
    driver_neutral = default_avatar.crop_landmarks(256).astype(np.float64)
    driver_neutral[:, 0] = 300.0 - driver_neutral[:, 0] * 1.1  # mirror and stretch
    driver_neutral[:, 1] *= 1.1
    driver = Rig.from_landmarks(driver_neutral, 300)
    c = np.zeros(N_COEFFICIENTS)
    c[COEFFICIENTS.index("jawOpen")] = 0.6
    c[COEFFICIENTS.index("eyeBlinkLeft")] = 1.0
    pose = np.array([0.1, -0.2, 0.05, 0.02, 0.0, 1.0])
    res = Retargeter(driver_neutral, 300).fit(driver.keypoints(c[None], pose[None])[0])
    assert np.abs(res.coeffs - c).max() < 0.05
    avatar_kp = Rig.for_avatar(default_avatar).keypoints(res.coeffs[None], res.pose[None])
    assert avatar_kp.shape == (1, 478, 2) and np.isfinite(avatar_kp).all()


def test_warm_start_tracks_a_sequence(default_avatar) -> None:
    rig = Rig.for_avatar(default_avatar, 256)
    fit = Retargeter(default_avatar.crop_landmarks(256), 256)
    t = np.linspace(0, 1, 10)
    for ti in t:
        c = np.zeros(N_COEFFICIENTS)
        c[0] = 0.5 + 0.4 * np.sin(6 * ti)
        pose = np.array([0.0, 0.3 * np.sin(3 * ti), 0.0, 0.0, 0.0, 1.0])
        res = fit.fit(rig.keypoints(c[None], pose[None])[0])
        assert abs(res.coeffs[0] - c[0]) < 0.02 and abs(res.pose[1] - pose[1]) < np.radians(0.5)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        Retargeter(np.zeros((10, 3)), 256)
