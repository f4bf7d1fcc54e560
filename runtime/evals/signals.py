"""Non-speech test signals (noise, music) for training negatives and robustness checks."""

from __future__ import annotations

import numpy as np

from engines.audio import SAMPLE_RATE


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance 1/f noise, float64 [n] (white noise shaped by 1/√f in the FFT domain)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.arange(spec.size), 1.0))
    x = np.fft.irfft(spec, n)
    return x / (np.std(x) + 1e-9)


def synthetic_music(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance stand-in for background music, float64 [n] at 16 kHz: random harmonic notes
    (2–6 partials, fundamentals 80–900 Hz, 0.1–0.6 s, plucked envelopes) over an A-major chord."""
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.1, 0.6) * SAMPLE_RATE)
        f0 = 80.0 * 2 ** rng.uniform(0, 3.5)
        seg = slice(pos, min(n, pos + length))
        tt = t[seg] - t[pos]
        env = np.exp(-tt * rng.uniform(2, 10)) * np.minimum(1.0, tt / 0.01)
        for k in range(1, int(rng.integers(3, 7))):
            x[seg] += env * np.sin(2 * np.pi * f0 * k * tt) / k
        pos += length
    x += 0.3 * sum(np.sin(2 * np.pi * 110.0 * 2 ** (s / 12) * t) for s in (0, 4, 7))
    return x / (np.std(x) + 1e-9)


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale to an RMS level in dB re full scale; float32."""
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12) * 10 ** (dbfs / 20)).astype(np.float32)
