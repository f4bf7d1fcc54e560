"""The one resampler of facecast: python-soxr (libsoxr), streaming and one-shot.

Every rate change on the real-time side goes through here: a client's ``audio`` stream to the
48 kHz output (``facecast serve``), the 48 kHz output to the motion model's 16 kHz (the live
session), a microphone's native rate to 48 kHz (``facecast cam``, ``facecast kiosk --mic``), and a
decoded file or TTS voice to either (``resample``).

Chosen by measurement on this project's 2-core machine (mono float32, 20 ms chunks, 4 s of a
1 kHz tone; ``tools``-free, see the issue-16 note), python-soxr ``ResampleStream`` at quality
``"HQ"`` against PyAV's ``AudioResampler`` (libswresample defaults):

======================  ======================  ======================
                        soxr ``ResampleStream``  PyAV ``AudioResampler``
======================  ======================  ======================
48 → 16 kHz, per chunk  9 µs                    40 µs
16 → 48 kHz, per chunk  10 µs                   34 µs
44.1 → 48 kHz           10 µs                   35 µs
tone SNR                130–135 dB              102–120 dB
alias of a 8.8 kHz tone −137 dB                 −43 dB
(48 → 16 kHz)
threads per stream      0                       2 (an FFmpeg filter graph)
======================  ======================  ======================

Both give exactly ``n · rate_out / rate_in`` samples once flushed. soxr needs no threads, so a
closed stream frees nothing late (the cause of the thread growth fixed in ``serve.reclaim``).
"""

from __future__ import annotations

import numpy as np

QUALITY = "HQ"
"""soxr quality preset: "HQ" is 20-bit precision, passband to 91% of Nyquist (libsoxr docs)."""

SILENCE_DBFS = -60.0
"""Level (dBFS, RMS over a chunk) under which a chunk counts as silence (``level_dbfs``)."""


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of float32 audio in dBFS (0 dBFS: a full-scale square wave; −inf: silence).

    Args:
        x: float32 [n] in [-1, 1].

    Returns the level in dB relative to full scale; ``-inf`` for an empty or all-zero chunk.
    """
    x = np.asarray(x, np.float32)
    if not x.size:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def _check_rate(rate: int, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{what} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono, shape [n], got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


class StreamResampler:
    """Streaming mono float32 resampling (soxr ``ResampleStream``), one instance per stream.

    Args:
        rate_in: the input's sample rate, Hz.
        rate_out: the output's sample rate, Hz.

    ``push(x)`` takes float32 [n] at ``rate_in`` and returns float32 [m] at ``rate_out``; the
    filter holds back a few milliseconds, which come out of later pushes or ``flush()``. In all,
    a flushed stream yields round(N · rate_out / rate_in) samples for N pushed. With equal rates
    the samples pass through unchanged. Raises ``ValueError`` for non-positive rates or audio
    that is not 1-D; ``RuntimeError`` when pushed after ``flush``.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = _check_rate(rate_in, "rate_in")
        self.rate_out = _check_rate(rate_out, "rate_out")
        self._stream = None
        self._closed = False
        if self.rate_in != self.rate_out:
            import soxr

            self._stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1,
                                               dtype="float32", quality=QUALITY)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Resample the next chunk: float32 [n] at ``rate_in`` → float32 [m] at ``rate_out``."""
        if self._closed:
            raise RuntimeError("the stream was flushed; start a new StreamResampler")
        x = _mono(x)
        if self._stream is None:
            return x.copy()
        return np.asarray(self._stream.resample_chunk(x), np.float32)

    def flush(self) -> np.ndarray:
        """End the stream: what the filter still holds, float32 [m] at ``rate_out``."""
        if self._closed:
            return np.zeros(0, np.float32)
        self._closed = True
        if self._stream is None:
            return np.zeros(0, np.float32)
        return np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True),
                          np.float32)


class RateFollower:
    """A stream whose input rate may change between chunks (a microphone reopened at another
    rate): a new ``StreamResampler`` is started, after flushing the old one, whenever it does.

    Args:
        rate_out: the output's sample rate, Hz.

    ``push(x, rate)`` → float32 [m] at ``rate_out``; ``flush()`` ends the current stream.
    """

    def __init__(self, rate_out: int) -> None:
        self.rate_out = _check_rate(rate_out, "rate_out")
        self._stream: StreamResampler | None = None

    def push(self, x: np.ndarray, rate: int) -> np.ndarray:
        """Resample float32 [n] at ``rate`` Hz to ``rate_out``."""
        head = np.zeros(0, np.float32)
        if self._stream is None or self._stream.rate_in != rate:
            if self._stream is not None:
                head = self._stream.flush()
            self._stream = StreamResampler(rate, self.rate_out)
        out = self._stream.push(x)
        return np.concatenate([head, out]) if head.size else out

    def flush(self) -> np.ndarray:
        """What the current stream still holds, at ``rate_out``; the next push starts afresh."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        out, self._stream = self._stream.flush(), None
        return out


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample a whole mono clip (one stream, flushed, so the tail is included).

    Args:
        audio: float32 [N] mono in [-1, 1].
        rate: its sample rate, Hz.
        target: the wanted sample rate, Hz.

    Returns float32 [round(N · target / rate)]. Raises ``ValueError`` for non-positive rates or
    audio that is not 1-D.
    """
    stream = StreamResampler(rate, target)
    head = stream.push(audio)
    return np.concatenate([head, stream.flush()])
