"""Decoding any audio file to mono float32 with PyAV (FFmpeg's decoders); resampling is
``runtime.audio.resample``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAX_AUDIO_SECONDS = 3600.0
"""Longest audio input accepted (one hour)."""


def load_audio(path: str | os.PathLike[str], max_seconds: float = MAX_AUDIO_SECONDS
               ) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file PyAV (FFmpeg) reads: wav, mp3, m4a, ogg, g722 …

    Channels are mixed down to mono by FFmpeg's resampler; the sample rate is kept.

    Returns (audio float32 [N] mono in [-1, 1], sample_rate Hz).

    Raises ValueError with a one-line reason for: a missing file, a file that cannot be decoded
    or has no audio stream, no samples at all, or more than ``max_seconds`` of audio (checked
    from the container's duration before decoding where it is known, and while decoding).
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"audio file not found: {p}")
    try:
        container = av.open(str(p), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot decode audio file {p}: {_reason(exc)}") from exc
    with container:
        streams = container.streams.audio
        if not streams:
            raise ValueError(f"no audio stream in {p}")
        stream = streams[0]
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1_000_000  # av.time_base: microseconds
        if declared is not None and declared > max_seconds + 1.0:
            raise ValueError(f"audio is {_duration(declared)} long; the limit is "
                             f"{_duration(max_seconds)}: {p}")
        rate = stream.rate or stream.codec_context.sample_rate
        if not rate:
            raise ValueError(f"audio stream of {p} has no sample rate")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        total = 0
        limit = int(max_seconds * rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0].copy())
                    total += out.samples
                if total > limit:
                    raise ValueError(f"audio is longer than the limit of "
                                     f"{_duration(max_seconds)}: {p}")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray()[0].copy())
        except av.FFmpegError as exc:
            raise ValueError(f"cannot decode audio file {p}: {_reason(exc)}") from exc
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise ValueError(f"audio file has no samples: {p}")
    if not np.isfinite(audio).all():
        raise ValueError(f"audio file decodes to non-finite samples: {p}")
    return np.clip(audio, -1.0, 1.0), int(rate)


def _duration(seconds: float) -> str:
    """Readable length: "1 h 0 min 5 s", "2 min 30 s", "1.5 s"."""
    if seconds < 60:
        return f"{seconds:g} s"
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    parts = ([f"{h} h"] if h else []) + ([f"{m} min"] if m or (h and s) else []) + ([f"{s} s"] if s else [])
    return " ".join(parts)


def _reason(exc: BaseException) -> str:
    """One line: FFmpeg's message without the errno and file name PyAV adds around it."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
