"""The one resampler of facecast: FFmpeg's libswresample through PyAV, streaming and one-shot.

Every rate change on the real-time side goes through here: a client's ``audio`` stream to the
48 kHz output (``facecast serve``), the 48 kHz output to the motion model's 16 kHz (the live
session), a microphone's native rate to 48 kHz (``facecast cam``, ``facecast kiosk --mic``), and a
decoded file or TTS voice to either (``resample``).

Chosen by measurement on this project's 2-core machine (issue 16; mono float32, 20 ms chunks;
hold-back = output still owed after the last pushed chunk, i.e. latency the stream adds):

=============================  ===========  =========  ===========  ===========  =======
resampler                      48→16 kHz    44.1→48    hold-back    alias of     threads
                               per chunk    per chunk  48→16 kHz    8.8 kHz      per
                                                                    tone, 48→16  stream
=============================  ===========  =========  ===========  ===========  =======
PyAV ``AudioResampler``        40 µs        35 µs      1.0 ms       −43 dB       2
soxr ``ResampleStream`` "HQ"   9 µs         10 µs      21.3 ms      −137 dB      0
soxr "MQ" / "LQ"               6 / 5 µs     9 / 8 µs   15.0/6.2 ms  −117/−114    0
**this module** (PyAV filter   21 µs        22 µs      1.0 ms       −43 dB       0
graph ``abuffer → aresample
→ aformat → abuffersink``,
``threads = 1``)
=============================  ===========  =========  ===========  ===========  =======

The hold-back decides it. The live session feeds the motion model from the 48 → 16 kHz stream
and its mouth row must be ready one lookahead after the audio: soxr "HQ" holds back 21–37 ms
(depending on the slice size), which cost the live path one more frame of lookahead (+40 ms of
lip-sync latency at 25 fps); "LQ" cuts the band above 6.4 kHz (−12.8 dB at 7 kHz) that the
motion model's 80-band log-mel was trained on (mean coefficient change 0.023 against 0.0015 for
"HQ"). PyAV's ``AudioResampler`` has the latency but builds its filter graph with FFmpeg's
default threading: two slice threads per stream (the threads that ``serve.reclaim`` had to
free). The same libswresample filter in a graph of our own with ``threads = 1`` keeps the
1 ms hold-back, starts no thread, costs half as much, and gives output bit-identical to
``AudioResampler`` (``tests/test_resample.py``), so the motion model sees what it was trained on.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


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
    """Streaming mono float32 resampling (libswresample in a one-thread PyAV filter graph), one
    instance per stream.

    Args:
        rate_in: the input's sample rate, Hz.
        rate_out: the output's sample rate, Hz.

    ``push(x)`` takes float32 [n] at ``rate_in`` and returns float32 [m] at ``rate_out``; the
    filter holds back about 1 ms, which comes out of later pushes or ``flush()``. In all, a
    flushed stream yields round(N · rate_out / rate_in) samples for N pushed. With equal rates the
    samples pass through unchanged. Raises ``ValueError`` for non-positive rates or audio that is
    not 1-D; ``RuntimeError`` when pushed after ``flush``.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = _check_rate(rate_in, "rate_in")
        self.rate_out = _check_rate(rate_out, "rate_out")
        self._graph = None
        self._closed = False
        self._pts = 0
        if self.rate_in != self.rate_out:
            import av

            graph = av.filter.Graph()
            graph.threads = 1  # FFmpeg's default starts a slice-thread pool per graph
            src = graph.add_abuffer(format="flt", layout="mono", sample_rate=self.rate_in,
                                    time_base=Fraction(1, self.rate_in))
            res = graph.add("aresample", str(self.rate_out))
            fmt = graph.add("aformat", sample_fmts="flt", channel_layouts="mono",
                            sample_rates=str(self.rate_out))
            sink = graph.add("abuffersink")
            src.link_to(res)
            res.link_to(fmt)
            fmt.link_to(sink)
            graph.configure()
            self._graph = graph

    def _drain(self) -> np.ndarray:
        import av

        parts = []
        while True:
            try:
                parts.append(self._graph.pull().to_ndarray()[0])
            except (av.BlockingIOError, av.EOFError):
                break
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else \
            np.zeros(0, np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Resample the next chunk: float32 [n] at ``rate_in`` → float32 [m] at ``rate_out``."""
        if self._closed:
            raise RuntimeError("the stream was flushed; start a new StreamResampler")
        x = _mono(x)
        if self._graph is None:
            return x.copy()
        if not x.size:
            return np.zeros(0, np.float32)
        import av

        frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
        frame.sample_rate = self.rate_in
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.rate_in)
        self._pts += x.size
        self._graph.push(frame)
        return self._drain()

    def flush(self) -> np.ndarray:
        """End the stream: what the filter still holds, float32 [m] at ``rate_out``."""
        if self._closed:
            return np.zeros(0, np.float32)
        self._closed = True
        if self._graph is None:
            return np.zeros(0, np.float32)
        self._graph.push(None)
        out = self._drain()
        self._graph = None
        return out


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
