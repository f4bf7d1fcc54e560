"""The log-mel front-end: shapes, what a tone and silence give, streaming = offline exactly."""

from __future__ import annotations

import numpy as np
import pytest

from engines import audio as A
from engines.features import (
    StreamingLogMel,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    n_frames,
)


def _tone(hz: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * A.SAMPLE_RATE)) / A.SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_constants_are_derived() -> None:
    assert (A.WIN_LENGTH, A.HOP_LENGTH, A.CHUNK_SAMPLES) == (400, 160, 320)
    assert A.FEATURE_RATE_HZ == 100 and A.N_FFT >= A.WIN_LENGTH


def test_shapes_and_frame_count() -> None:
    assert log_mel(np.zeros(399, np.float32)).shape == (0, 80)
    assert log_mel(np.zeros(400, np.float32)).shape == (1, 80)
    one_second = log_mel(np.zeros(16000, np.float32))
    assert one_second.shape == (n_frames(16000), 80) == (98, 80)
    assert one_second.dtype == np.float32


def test_silence_is_the_floor_and_a_tone_lands_in_its_band() -> None:
    silence = log_mel(np.zeros(1600, np.float32))
    assert np.allclose(silence, np.log10(A.LOG_FLOOR), atol=1e-5)
    fb = mel_filterbank()
    freqs = np.linspace(0, A.SAMPLE_RATE / 2, A.N_FFT // 2 + 1)
    for hz in (300.0, 1000.0, 3000.0, 6000.0):
        band = int(np.median(log_mel(_tone(hz, 0.5)).argmax(axis=1)))
        centre = freqs[fb[band].argmax()]
        assert abs(centre - hz) / hz < 0.15, (hz, centre)
    louder = log_mel(_tone(1000.0, 0.5, 0.5)).max() - log_mel(_tone(1000.0, 0.5, 0.05)).max()
    assert louder == pytest.approx(2.0, abs=0.01)  # 20 dB = 2 decades of power


def test_mel_scale_round_trip_and_filter_area() -> None:
    hz = np.array([0.0, 500.0, 1000.0, 4000.0, 8000.0])
    assert np.allclose(mel_to_hz(hz_to_mel(hz)), hz)
    fb = mel_filterbank()
    assert fb.shape == (80, 257) and (fb.sum(axis=1) > 0).all()
    df = A.SAMPLE_RATE / A.N_FFT
    area = fb.sum(axis=1) * df  # Slaney normalisation: each triangle has area ≈ 1, up to the
    assert np.allclose(area, 1.0, atol=0.15)  # 31.25-Hz FFT grid sampling the narrow low bands


@pytest.mark.parametrize("chunking", ["webrtc", "random"])
def test_streaming_equals_offline_exactly(chunking: str) -> None:
    rng = np.random.default_rng(7)
    audio = np.concatenate([_tone(220, 0.7), (0.1 * rng.standard_normal(19_000)).astype(np.float32),
                            np.zeros(3_333, np.float32)])
    offline = log_mel(audio)
    stream = StreamingLogMel()
    parts, i = [], 0
    while i < audio.size:
        n = A.CHUNK_SAMPLES if chunking == "webrtc" else int(rng.integers(1, 900))
        parts.append(stream.push(audio[i:i + n]))
        i += n
    assert np.array_equal(np.concatenate(parts), offline)
    stream.reset()
    assert stream.push(audio[:399]).shape == (0, 80)


def test_bad_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        log_mel(np.zeros(1000, np.float32), sample_rate=48000)
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((1000, 2), np.float32))
    with pytest.raises(TypeError, match="float32"):
        log_mel(np.zeros(1000, np.int16))
    bad = np.zeros(1000, np.float32)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StreamingLogMel().push(bad)
