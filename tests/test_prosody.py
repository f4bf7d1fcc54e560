"""runtime.audio.prosody: per-video-frame loudness and Praat f0 on synthetic tones and real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.audio.prosody import (
    PITCH_CEILING_HZ,
    PITCH_FLOOR_HZ,
    SILENCE_DB,
    Prosody,
    frame_energy_db,
    pitch_track,
    prosody_frames,
)

SR = 16_000
FPS = 25
PROMPT = Path("/usr/share/asterisk/sounds/en/demo-enterkeywords.g722")


def _harmonic(f0: float, seconds: float, sr: int = SR) -> np.ndarray:
    """A voiced-like tone: f0 and four harmonics with 1/k amplitudes, peak < 0.6."""
    t = np.arange(round(sr * seconds)) / sr
    return sum((0.25 / k) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)).astype(np.float32)


def test_two_tones_give_their_f0_per_frame() -> None:
    audio = np.concatenate([_harmonic(150.0, 1.0), _harmonic(220.0, 1.0)])
    p = prosody_frames(audio, SR, FPS, 2 * FPS)
    assert isinstance(p, Prosody)
    assert p.f0_hz.shape == (50,) and p.f0_hz.dtype == np.float32
    assert p.energy_db.shape == (50,) and p.energy_db.dtype == np.float32
    # Away from the edges and the transition at frame 25 (1.0 s).
    first, second = p.f0_hz[2:23], p.f0_hz[28:48]
    np.testing.assert_allclose(first, 150.0, rtol=0.03)
    np.testing.assert_allclose(second, 220.0, rtol=0.03)
    # Steady tones: steady loudness, well above silence.
    assert np.ptp(p.energy_db) < 1.0
    assert p.energy_db.min() > -30.0


def test_silence_is_unvoiced_at_the_silence_floor() -> None:
    p = prosody_frames(np.zeros(SR, np.float32), SR, FPS, FPS)
    assert np.all(p.f0_hz == 0.0)
    assert np.all(p.energy_db == np.float32(SILENCE_DB))


def test_frames_past_the_end_read_as_silence() -> None:
    audio = _harmonic(150.0, 1.0)
    p = prosody_frames(audio, SR, FPS, FPS + 5)
    assert np.all(p.energy_db[FPS:] == np.float32(SILENCE_DB))
    assert np.all(p.f0_hz[FPS + 1:] == 0.0)


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    t = np.arange(SR) / SR
    sine = np.sin(2 * np.pi * 400.0 * t).astype(np.float32)  # 16 whole periods per frame
    energy = frame_energy_db(sine, SR, FPS, FPS)
    np.testing.assert_allclose(energy, 20 * np.log10(np.sqrt(0.5)), atol=0.05)
    half = frame_energy_db(0.5 * sine, SR, FPS, FPS)
    np.testing.assert_allclose(half - energy, 20 * np.log10(0.5), atol=0.01)


def test_energy_slices_follow_the_exact_frame_boundaries() -> None:
    # A burst confined to video frame 3's slice [1920, 2560) at 16 kHz / 25 fps.
    audio = np.zeros(SR, np.float32)
    audio[3 * 640:4 * 640] = 0.5
    energy = frame_energy_db(audio, SR, FPS, FPS)
    assert energy[3] == pytest.approx(20 * np.log10(0.5), abs=1e-4)
    assert np.all(np.delete(energy, 3) == np.float32(SILENCE_DB))


def test_real_speech_is_mostly_voiced_in_loud_frames() -> None:
    if not PROMPT.is_file():
        pytest.skip(f"{PROMPT} not installed (asterisk-core-sounds-en-g722)")
    from runtime.audio.decode import load_audio

    audio, rate = load_audio(PROMPT)
    n_frames = len(audio) * FPS // rate
    p = prosody_frames(audio, rate, FPS, n_frames)
    loud = p.energy_db > p.energy_db.max() - 20.0
    assert loud.sum() >= 30
    voiced = p.f0_hz[loud] > 0
    assert voiced.mean() > 0.7
    f0 = p.f0_hz[p.f0_hz > 0]
    assert np.all((f0 >= PITCH_FLOOR_HZ) & (f0 <= PITCH_CEILING_HZ))
    # Quiet frames exist too (pauses), and the loud ones are far from the floor.
    assert p.energy_db.min() < p.energy_db.max() - 20.0


def test_very_short_audio_gives_zero_f0() -> None:
    audio = _harmonic(150.0, 0.01)  # 160 samples, shorter than the 40 ms window
    times, f0 = pitch_track(audio, SR)
    assert times.size == 0 and f0.size == 0
    p = prosody_frames(audio, SR, FPS, 3)
    assert np.all(p.f0_hz == 0.0)
    assert p.energy_db[0] > SILENCE_DB
    assert np.all(p.energy_db[1:] == np.float32(SILENCE_DB))


def test_audio_just_long_enough_for_one_pitch_frame() -> None:
    audio = _harmonic(150.0, 0.045)  # 720 samples: a single pitch frame
    times, f0 = pitch_track(audio, SR)
    assert times.size >= 1 and f0.size == times.size
    p = prosody_frames(audio, SR, FPS, 2)
    assert p.f0_hz[0] == pytest.approx(150.0, rel=0.03)


def test_zero_frames() -> None:
    p = prosody_frames(_harmonic(150.0, 0.2), SR, FPS, 0)
    assert p.f0_hz.shape == (0,) and p.energy_db.shape == (0,)
