"""Behaviour layer: blink statistics, idle motion, prosody gestures, continuity, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from avatars.rig import INDEX, N_COEFFICIENTS
from engines.visemes import MOTION_COEFFICIENTS
from runtime.animation.behaviour import Behaviour, BehaviourParams, blink_closure

FPS = 25
K = len(MOTION_COEFFICIENTS)


def _idle(seconds: float, seed: int = 0, fps: float = FPS) -> tuple[Behaviour, np.ndarray,
                                                                      np.ndarray]:
    b = Behaviour(fps, seed=seed)
    f = int(seconds * fps)
    coeffs, pose = b.run(np.zeros((f, K)), np.zeros(f))
    return b, coeffs, pose


def test_blink_rate_duration_and_doubles_over_ten_minutes() -> None:
    b, coeffs, _ = _idle(600, seed=3)
    per_min = len(b.blinks) / 10
    assert 15 <= per_min <= 20, per_min
    durations = np.array([x.duration_s for x in b.blinks])
    assert durations.min() >= 0.1 and durations.max() <= 0.25
    starts = np.array([x.start_s for x in b.blinks])
    gaps = np.diff(starts) - durations[:-1]
    doubles = int((gaps < 0.2).sum())
    assert 0.04 * len(b.blinks) <= doubles <= 0.25 * len(b.blinks), doubles
    # every blink reads as closed on at least one frame, and the lids are open between blinks
    blink = coeffs[:, INDEX["eyeBlinkLeft"]]
    frames = (starts * FPS).astype(int)
    for f0 in frames:
        assert blink[f0:f0 + 8].max() > 0.9
    assert np.median(blink) == 0.0
    assert np.array_equal(blink, coeffs[:, INDEX["eyeBlinkRight"]])


def test_blink_shape_closes_then_opens_more_slowly() -> None:
    u = np.linspace(0, 1, 1001)
    c = np.array([blink_closure(x) for x in u])
    assert c[0] == 0 and c[-1] == 0 and c.max() == 1.0
    closed = u[c >= 0.99]
    assert closed.min() < 0.4 and closed.max() >= 0.49
    assert closed.min() < 1 - closed.max()  # closing is faster than opening


def test_idle_head_motion_is_small_smooth_and_alive() -> None:
    _, _, pose = _idle(120)
    deg = np.degrees(pose[:, :3])
    std = deg.std(axis=0)
    assert (std > 0.3).all() and (std < 4.0).all(), std  # visible but small
    assert np.abs(deg).max() < 12
    per_frame = np.abs(np.diff(deg, axis=0)).max(axis=0)
    assert (per_frame < 2.0).all(), per_frame  # no jumps (≤ 50°/s even during a glance)
    breathing = pose[:, 4]
    assert 0 < -breathing.min() <= 0.0025 and breathing.max() <= 1e-9
    spectrum = np.abs(np.fft.rfft(breathing - breathing.mean()))
    peak_hz = np.fft.rfftfreq(len(breathing), 1 / FPS)[spectrum.argmax()]
    assert 0.15 <= peak_hz <= 0.35, peak_hz  # 9–21 breaths a minute
    assert np.allclose(pose[:, 5], 1.0)


def test_seeded_and_reproducible() -> None:
    _, c1, p1 = _idle(20, seed=7)
    _, c2, p2 = _idle(20, seed=7)
    _, _, p3 = _idle(20, seed=8)
    assert np.array_equal(c1, c2) and np.array_equal(p1, p2)
    assert not np.array_equal(p1, p3)


def _speech_inputs(seconds: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A synthetic talker: 3 s phrases with 4 Hz syllables, pitch accents every ~0.8 s."""
    f = int(seconds * FPS)
    t = (np.arange(f) + 0.5) / FPS
    rng = np.random.default_rng(seed)
    phrase = (t % 4.0) < 3.0
    syll = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    mouth = np.zeros((f, K))
    mouth[:, MOTION_COEFFICIENTS.index("jawOpen")] = 0.6 * syll * phrase
    vad = phrase.astype(float)
    energy = np.where(phrase, -20 + 6 * syll, -70.0)
    f0 = np.where(phrase & (syll > 0.3), 120 + 25 * np.maximum(0, np.sin(2 * np.pi * 1.25 * t))
                  + rng.normal(0, 1, f), 0.0)
    return mouth, vad, energy, f0


def test_speech_drives_mouth_nods_and_brows() -> None:
    mouth, vad, energy, f0 = _speech_inputs(40)
    b = Behaviour(FPS, seed=1)
    coeffs, pose = b.run(mouth, vad, energy, f0)
    jaw = coeffs[:, INDEX["jawOpen"]]
    assert np.corrcoef(jaw, mouth[:, 0])[0, 1] > 0.97  # the speech mouth passes, no lag
    assert jaw.std() > 0.9 * mouth[:, 0].std()  # and keeps its amplitude through smoothing
    assert len(b.accents) >= 15  # about one accent per 0.8 s of speech
    brow = coeffs[:, INDEX["browInnerUp"]]
    assert brow.max() > 0.2 and (brow > 0.1).mean() > 0.05
    speaking = vad > 0.5
    pitch = np.degrees(pose[:, 0])
    # the head moves more while speaking than while idle
    idle = Behaviour(FPS, seed=1)
    _, idle_pose = idle.run(np.zeros_like(mouth), np.zeros(len(vad)))
    assert np.abs(np.diff(pitch[speaking])).mean() > 1.5 * np.abs(
        np.diff(np.degrees(idle_pose[:, 0]))).mean()


def test_speech_and_idle_blend_without_jumps() -> None:
    mouth, vad, energy, f0 = _speech_inputs(20)
    quiet = Behaviour(FPS, seed=2, params=BehaviourParams(blink_rate_per_min=1e-3))
    coeffs, pose = quiet.run(mouth, vad, energy, f0)
    onsets = np.flatnonzero(np.diff(vad) != 0) + 1
    assert len(onsets) >= 8
    d_pose = np.abs(np.diff(np.degrees(pose[:, :3]), axis=0)).max(axis=1)
    for i in onsets:
        assert d_pose[max(0, i - 2):i + 3].max() < 1.5
    brow = coeffs[:, INDEX["browInnerUp"]]
    assert np.abs(np.diff(brow)).max() < 0.25


def test_step_rejects_wrong_shapes_and_counts() -> None:
    b = Behaviour(FPS)
    with pytest.raises(ValueError, match="mouth"):
        b.step(np.zeros(K + 1), 0.0)
    with pytest.raises(ValueError, match="frame count"):
        b.run(np.zeros((5, K)), np.zeros(4))
    with pytest.raises(ValueError, match="fps"):
        Behaviour(0)
    c, p = b.step(np.full(K, 2.0), float("nan"), float("nan"), float("nan"))
    assert c.shape == (N_COEFFICIENTS,) and p.shape == (6,)
    assert np.isfinite(c).all() and np.isfinite(p).all() and c.max() <= 1.0


@pytest.mark.parametrize("fps", [24, 30, 60])
def test_rates_hold_at_other_frame_rates(fps: int) -> None:
    b, _, pose = _idle(180, seed=5, fps=fps)
    assert 12 <= len(b.blinks) / 3 <= 23
    assert np.degrees(pose[:, 1]).std() < 4
