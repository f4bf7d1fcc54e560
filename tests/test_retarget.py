"""Retargeting round trip: random expressions and poses come back from keypoints alone."""

from __future__ import annotations

import numpy as np
import pytest

from avatars.retarget import (
    ACCURATE,
    FAST,
    FIT_POINTS,
    MESH_POINTS,
    N_PARAMS,
    NUISANCE_PREFIXES,
    Retargeter,
)
from avatars.rig import COEFFICIENTS, INDEX, N_COEFFICIENTS, NEUTRAL_POSE, Rig, in_domain


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
    print(f"worst coefficient error {worst_c:.2e}, worst angle error {worst_deg:.2e} deg")
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


def test_bad_input(default_avatar) -> None:
    with pytest.raises(ValueError):
        Retargeter(np.zeros((10, 3)), 256)
    fit = Retargeter(default_avatar.crop_landmarks(256), 256, FAST)
    with pytest.raises(ValueError, match="478"):
        fit.fit(np.zeros((468, 2)))
    bad = default_avatar.crop_landmarks(256).astype(np.float64)
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit.fit(bad)


def test_presets_share_one_model(default_avatar) -> None:
    """Both presets fit the same rig: ``predict`` is ``Rig.keypoints3d`` on the fitted vertices
    and the exact Jacobian matches finite differences."""
    neutral = default_avatar.crop_landmarks(256)
    rig = Rig.for_avatar(default_avatar, 256)
    assert ACCURATE.points == MESH_POINTS and len(MESH_POINTS) == 468
    assert FAST.points == FIT_POINTS and set(FIT_POINTS) < set(MESH_POINTS)
    rng = np.random.default_rng(5)
    c = rng.uniform(0.1, 0.4, N_COEFFICIENTS)
    pose = np.array([0.1, -0.15, 0.05, 0.02, -0.01, 1.05])
    x = np.concatenate([c, pose])
    for options in (ACCURATE, FAST):
        fit = Retargeter(neutral, 256, options)
        pts = list(options.points)
        np.testing.assert_allclose(fit.predict(x[None])[0],
                                   rig.keypoints3d(c[None], pose[None])[0, pts, :2], atol=1e-9)
        jac = fit.jacobian(x)
        assert jac.shape == (2 * len(pts), N_PARAMS)
        step = 1e-6
        fd = np.stack([(fit.predict((x + step * e)[None])[0] - fit.predict(x[None])[0]).ravel()
                       / step for e in np.eye(N_PARAMS)], axis=1)
        np.testing.assert_allclose(jac, fd, atol=1e-3 * np.abs(fd).max())


def test_fast_preset_prior_holds_back_look_alikes(default_avatar) -> None:
    """The ridge prior costs its weight × coefficient, harder for the look-alike coefficients,
    and pulls a small motion toward the neutral rather than spreading it."""
    options = FAST.with_prior(0.05, 0.2)
    w = options.prior()
    assert w.shape == (N_COEFFICIENTS,)
    for name, i in INDEX.items():
        assert w[i] == (0.2 if name.startswith(NUISANCE_PREFIXES) else 0.05)
    assert (FAST.prior() == 0).all() and FAST.max_nfev == 8
    rig = Rig.for_avatar(default_avatar, 256)
    c = np.zeros(N_COEFFICIENTS)
    c[INDEX["jawOpen"]] = 0.5
    kp = rig.keypoints(c[None], NEUTRAL_POSE[None])[0]
    plain = Retargeter(default_avatar.crop_landmarks(256), 256, FAST).fit(kp, warm_start=False)
    held = Retargeter(default_avatar.crop_landmarks(256), 256, options).fit(kp, warm_start=False)
    assert abs(plain.coeffs[INDEX["jawOpen"]] - 0.5) < 0.02
    nuisance = [i for name, i in INDEX.items() if name.startswith(NUISANCE_PREFIXES)]
    assert held.coeffs[nuisance].sum() <= plain.coeffs[nuisance].sum() + 1e-6
    assert held.nfev <= 8 and held.rms_iod < 0.05 and held.seconds >= 0.0
