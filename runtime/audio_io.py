"""Audio helpers of the real-time side: resampling with PyAV's resampler (libswresample)."""

from __future__ import annotations

import numpy as np


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample mono float32 audio.

    Args:
        audio: float32 [N] mono in [-1, 1].
        rate: its sample rate, Hz.
        target: the wanted sample rate, Hz.

    Returns float32 [≈ N · target / rate] (PyAV's resampler, flushed, so the tail is included).
    Raises ``ValueError`` for non-positive rates or non-1-D audio.
    """
    import av

    if rate <= 0 or target <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} → {target}")
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono [N], got shape {list(a.shape)}")
    if rate == target or a.size == 0:
        return a.copy()
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(a[None]), format="flt", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray()[0] for f in resampler.resample(frame)]
    out += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
