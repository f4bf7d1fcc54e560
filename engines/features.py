"""The model front-end: 16 kHz mono audio → 80-band log-mel at 100 frames per second.

One function (``log_mel``) serves training and serving; ``StreamingLogMel`` takes audio in chunks
(20 ms WebRTC frames, or any size) and yields exactly the frames ``log_mel`` gives for the same
samples, because both run the same per-frame computation on the same sample windows.

Framing is causal, without centre padding: frame t covers samples [t·HOP, t·HOP + WIN), so
frame t is available 25 ms after its first sample and a signal of N samples has
``1 + (N − WIN) // HOP`` frames (0 if N < WIN).

Per frame: periodic Hann window of WIN_LENGTH (400) samples, zero-padded to N_FFT (512), power
spectrum |X|², an 80-band mel filterbank (Slaney's auditory-toolbox mel scale and area
normalisation, 0–8 kHz; the same definition librosa uses by default), then log10 of the power
floored at LOG_FLOOR.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from engines.audio import (
    FMAX_HZ,
    FMIN_HZ,
    HOP_LENGTH,
    LOG_FLOOR,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN_LENGTH,
)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 steps
    per factor 6.4). Malcolm Slaney, Auditory Toolbox, Interval Research Tech. Rep. 1998-010."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz < min_log_hz, hz / f_sp,
                    min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel < min_log_mel, mel * f_sp,
                    min_log_hz * np.exp(logstep * (mel - min_log_mel)))


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Triangular mel filters, float32 [N_MELS, N_FFT // 2 + 1], each scaled to unit area
    (2 / bandwidth in Hz, Slaney normalisation) so bands of different widths are comparable."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN_HZ), hz_to_mel(FMAX_HZ), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz - lower) / (centre - lower)
    falling = (upper - fft_hz) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (upper - lower))
    weights.setflags(write=False)
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(WIN_LENGTH)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / WIN_LENGTH)).astype(np.float32)


def n_frames(n_samples: int) -> int:
    """Frames ``log_mel`` yields for ``n_samples`` samples."""
    return 0 if n_samples < WIN_LENGTH else 1 + (n_samples - WIN_LENGTH) // HOP_LENGTH


def _frames_to_log_mel(frames: np.ndarray) -> np.ndarray:
    """frames float32 [T, WIN_LENGTH] → log-mel float32 [T, N_MELS] (row by row)."""
    spec = np.fft.rfft(frames * _window(), n=N_FFT, axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    # einsum without BLAS: each output is summed in the same order whatever T is, so a frame
    # computed alone (streaming) is bit-identical to the same frame computed in a batch
    mel = np.einsum("tf,mf->tm", power, mel_filterbank(), optimize=False)
    return np.log10(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validate model input audio; returns it as contiguous float32 [N].

    Raises:
        ValueError: sample rate other than 16 kHz (resample first: ``runtime.audio.resample``), not 1-D
            (mix down to mono first), or non-finite samples.
        TypeError: not a floating-point array.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"audio must be {SAMPLE_RATE} Hz for the model front-end, got {sample_rate} Hz "
            "(resample to 16 kHz first)"
        )
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono, shape [N]; got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"audio must be float32 in [-1, 1], got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError("audio contains NaN or infinite samples")
    return a


def log_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Offline front-end.

    Args:
        audio: float32 [N] mono samples in [-1, 1] at 16 kHz.
        sample_rate: must be 16000 (checked).

    Returns float32 [T, 80] log10 mel power, T = ``n_frames(N)``; frame t covers samples
    [160·t, 160·t + 400). Raises as ``check_audio``.
    """
    a = check_audio(audio, sample_rate)
    t = n_frames(a.size)
    if t == 0:
        return np.zeros((0, N_MELS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(a, WIN_LENGTH)[::HOP_LENGTH][:t]
    return _frames_to_log_mel(frames)


class StreamingLogMel:
    """Streaming front-end: push chunks of any length, get the newly completed frames.

    The concatenation of everything ``push`` returns equals ``log_mel`` of the concatenated
    input. Keeps at most WIN_LENGTH − HOP_LENGTH + chunk samples of history.
    """

    def __init__(self) -> None:
        self._buffer = np.zeros(0, np.float32)

    def reset(self) -> None:
        """Drop buffered samples (a new utterance or a barge-in)."""
        self._buffer = np.zeros(0, np.float32)

    def push(self, chunk: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Add float32 [n] samples at 16 kHz; returns float32 [k, 80], the frames completed by
        them (k may be 0). Raises as ``check_audio``."""
        a = check_audio(chunk, sample_rate)
        buf = np.concatenate([self._buffer, a])
        t = n_frames(buf.size)
        if t == 0:
            self._buffer = buf
            return np.zeros((0, N_MELS), np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(buf, WIN_LENGTH)[::HOP_LENGTH][:t]
        out = _frames_to_log_mel(frames)
        self._buffer = buf[t * HOP_LENGTH:]
        return out
