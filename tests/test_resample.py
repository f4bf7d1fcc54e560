"""The one resampler (runtime/audio/resample.py: libswresample in a
one-thread PyAV filter graph): lengths, timing, streaming equals
one-shot, no threads per stream, aliasing, bad input."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from runtime.audio.resample import (
    RateFollower,
    StreamResampler,
    level_dbfs,
    resample,
)


def _tone(freq: float, n: int, rate: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def _threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else \
        threading.active_count()


@pytest.mark.parametrize("target", [48_000, 16_000])
def test_resample_keeps_impulse_position(target: int) -> None:
    rate = 22_050
    x = np.zeros(rate, np.float32)
    x[10_000] = 1.0
    y = resample(x, rate, target)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - rate * target / rate) <= 2  # one second in, one second out
    assert abs(int(np.argmax(np.abs(y))) - 10_000 * target / rate) <= 1.0


def test_resample_same_rate_and_empty() -> None:
    x = _tone(100.0, 100, 16_000)
    y = resample(x, 16_000, 16_000)
    np.testing.assert_array_equal(x, y)
    assert y is not x
    assert resample(np.zeros(0, np.float32), 16_000, 48_000).shape == (0,)


def test_resample_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        resample(np.zeros((2, 100), np.float32), 16_000, 48_000)
    for rate, target in [(0, 16_000), (16_000, 0), (-1, 16_000), (16_000, -48_000),
                         (16_000.5, 48_000)]:
        with pytest.raises(ValueError):
            resample(np.zeros(100, np.float32), rate, target)


@pytest.mark.parametrize(("rate_in", "rate_out"), [(48_000, 16_000), (16_000, 48_000),
                                                   (44_100, 48_000), (22_050, 16_000)])
def test_stream_in_20ms_chunks_equals_one_shot(rate_in: int, rate_out: int) -> None:
    x = _tone(440.0, rate_in * 2, rate_in) + _tone(3000.0, rate_in * 2, rate_in, 0.1)
    chunk = rate_in // 50
    stream = StreamResampler(rate_in, rate_out)
    parts = [stream.push(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [stream.flush()]
    y = np.concatenate(parts)
    assert len(y) == round(len(x) * rate_out / rate_in)
    np.testing.assert_allclose(y, resample(x, rate_in, rate_out), atol=1e-6)


def test_streams_start_no_threads() -> None:
    before = _threads()
    streams = [StreamResampler(44_100, 48_000) for _ in range(20)]
    for s in streams:
        s.push(_tone(440.0, 882, 44_100))
    assert _threads() == before


@pytest.mark.parametrize(("rate_in", "rate_out"), [(48_000, 16_000), (44_100, 48_000),
                                                   (16_000, 48_000)])
def test_stream_is_bit_identical_to_pyav_audio_resampler(rate_in: int, rate_out: int) -> None:
    """The motion model was trained and served on ``av.AudioResampler``'s output: the one-thread
    graph must not change a sample of it."""
    import av

    x = np.random.default_rng(0).normal(0, 0.3, rate_in).astype(np.float32)
    chunk = rate_in // 50
    ref = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    want = []
    for i in range(0, len(x), chunk):
        frame = av.AudioFrame.from_ndarray(x[None, i:i + chunk], format="flt", layout="mono")
        frame.sample_rate = rate_in
        want += [f.to_ndarray()[0] for f in ref.resample(frame)]
    want += [f.to_ndarray()[0] for f in ref.resample(None)]
    stream = StreamResampler(rate_in, rate_out)
    got = [stream.push(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [stream.flush()]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))


def test_stream_holds_back_about_a_millisecond() -> None:
    """What a live stream owes after each chunk is latency: the session's lookahead counts it
    (``runtime.live.session.DOWNSAMPLE_HOLD_S``)."""
    from runtime.live.session import DOWNSAMPLE_HOLD_S

    stream = StreamResampler(48_000, 16_000)
    x = np.random.default_rng(1).normal(0, 0.1, 48_000).astype(np.float32)
    out = sum(len(stream.push(x[i:i + 1920])) for i in range(0, len(x), 1920))
    assert (16_000 - out) / 16_000 <= DOWNSAMPLE_HOLD_S + 1e-9


def test_push_after_flush_and_bad_chunks_are_errors() -> None:
    s = StreamResampler(48_000, 16_000)
    with pytest.raises(ValueError, match="mono"):
        s.push(np.zeros((960, 2), np.float32))
    s.flush()
    assert s.flush().shape == (0,)
    with pytest.raises(RuntimeError):
        s.push(np.zeros(960, np.float32))


def test_rate_follower_restarts_when_the_rate_changes() -> None:
    f = RateFollower(48_000)
    a = np.concatenate([f.push(_tone(440.0, 882, 44_100), 44_100) for _ in range(50)])
    b = np.concatenate([f.push(_tone(440.0, 960, 48_000), 48_000) for _ in range(50)])
    tail = f.flush()
    assert len(a) + len(b) + len(tail) == 48_000 + 48_000
    np.testing.assert_array_equal(b[-960:], _tone(440.0, 960, 48_000))  # passed through


def test_level_dbfs() -> None:
    assert level_dbfs(np.zeros(10, np.float32)) == float("-inf")
    assert level_dbfs(np.zeros(0, np.float32)) == float("-inf")
    assert level_dbfs(np.ones(10, np.float32)) == pytest.approx(0.0)
    assert level_dbfs(_tone(1000.0, 48_000, 48_000, 1.0)) == pytest.approx(-3.01, abs=0.01)
