"""Speech prosody per video frame: loudness (dBFS) and fundamental frequency (Hz).

The behaviour layer (``runtime.animation.behaviour``) makes head nods and brow raises follow these, as
speakers do ("visual prosody": Graf, Cosatto, Strom & Huang, FG 2002; Cavé et al., ICSLP 1996).

Pitch comes from Praat's autocorrelation pitch tracker (Boersma, "Accurate short-term analysis of
the fundamental frequency and the harmonics-to-noise ratio of a sampled sound", IFA Proceedings
17, 1993) through the ``praat-parselmouth`` package; loudness is the RMS of each frame's audio
slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE, SAMPLE_RATE

PITCH_FLOOR_HZ = 75.0
"""Lowest f0 searched (Praat's default floor; adult male speech rarely goes under it)."""
PITCH_CEILING_HZ = 500.0
"""Highest f0 searched (covers adult and child voices; Praat's default is 600)."""
PITCH_STEP_S = 0.01
"""Pitch analysis hop in seconds."""
SILENCE_DB = -90.0
"""Loudness reported for digital silence, dBFS."""


@dataclass(frozen=True)
class Prosody:
    """Prosody of F video frames.

    Attributes:
        energy_db: float32 [F] RMS level of each frame's audio slice, dBFS (≥ ``SILENCE_DB``).
        f0_hz: float32 [F] fundamental frequency at each frame's centre, Hz; 0 where unvoiced.
    """

    energy_db: np.ndarray
    f0_hz: np.ndarray


def frame_energy_db(audio: np.ndarray, sample_rate: int, fps: float | Fraction,
                    n_frames: int) -> np.ndarray:
    """RMS level of video frame n's audio slice [n·S, (n+1)·S), S = sample_rate / fps.

    Args:
        audio: float32 [N] mono in [-1, 1].
        sample_rate: Hz. fps: video frame rate. n_frames: F; slices past the end read as silence.

    Returns float32 [F] in dBFS (20·log10 RMS), floored at ``SILENCE_DB``.
    """
    a = np.asarray(audio, dtype=np.float64)
    step = Fraction(sample_rate) / Fraction(fps)
    bounds = [int(n * step) for n in range(n_frames + 1)]
    out = np.full(n_frames, SILENCE_DB, np.float32)
    for n in range(n_frames):
        seg = a[bounds[n]:bounds[n + 1]]
        if seg.size:
            rms = float(np.sqrt(np.mean(seg * seg)))
            if rms > 0:
                out[n] = max(SILENCE_DB, 20.0 * np.log10(rms))
    return out


def pitch_track(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """f0 of mono audio every ``PITCH_STEP_S`` (Praat ``To Pitch (ac)``, default costs).

    Returns (times_s float64 [P], f0_hz float32 [P], 0 where unvoiced). Audio shorter than the
    analysis window (3 periods of ``PITCH_FLOOR_HZ``, 40 ms) gives empty arrays.
    """
    import parselmouth

    a = np.asarray(audio, dtype=np.float64)
    if a.size < int(3.0 / PITCH_FLOOR_HZ * sample_rate) + 1:
        return np.zeros(0), np.zeros(0, np.float32)
    sound = parselmouth.Sound(a, sampling_frequency=float(sample_rate))
    pitch = sound.to_pitch_ac(time_step=PITCH_STEP_S, pitch_floor=PITCH_FLOOR_HZ,
                              pitch_ceiling=PITCH_CEILING_HZ)
    return np.asarray(pitch.xs(), np.float64), pitch.selected_array["frequency"].astype(np.float32)


def warm_up(sample_rate: int = OUTPUT_SAMPLE_RATE) -> None:
    """Load Praat and run one pitch analysis on a synthetic voiced glide (a 90–250 Hz
    sawtooth, 2 s), so a server pays Praat's one-off cost (about 70 MB of RSS and a slow first
    call, measured on the first speech of a live session) at start-up, not during a client's
    first sentence."""
    n = 2 * sample_rate
    t = np.arange(n) / sample_rate
    phase = np.cumsum((170.0 + 80.0 * np.sin(2 * np.pi * 1.3 * t)) / sample_rate)
    x = (0.3 * (phase % 1.0 - 0.5)).astype(np.float32)
    step = sample_rate // 25
    for i in range(0, n - 3 * step, step):
        pitch_track(x[i:i + 3 * step], sample_rate)


def prosody_frames(audio: np.ndarray, sample_rate: int, fps: float | Fraction,
                   n_frames: int) -> Prosody:
    """Loudness and f0 for F video frames of ``audio`` (frame n centred at (n + 0.5) / fps).

    f0 is taken from the pitch frame nearest each video frame's centre (unvoiced → 0).
    """
    energy = frame_energy_db(audio, sample_rate, fps, n_frames)
    times, f0 = pitch_track(audio, sample_rate)
    out = np.zeros(n_frames, np.float32)
    if times.size:
        centres = (np.arange(n_frames) + 0.5) / float(fps)
        idx = np.clip(np.searchsorted(times, centres), 1, len(times) - 1) if len(times) > 1 \
            else np.zeros(n_frames, int)
        if len(times) > 1:
            left = times[idx - 1]
            idx = np.where(np.abs(centres - left) <= np.abs(times[idx] - centres), idx - 1, idx)
        near = np.abs(times[idx] - centres) <= PITCH_STEP_S
        out = np.where(near, f0[idx], 0.0).astype(np.float32)
    return Prosody(energy_db=energy, f0_hz=out)
