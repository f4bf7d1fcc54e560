"""runtime.audio.decode: decoding real files of several formats with PyAV, its errors, resampling."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from runtime.audio.decode import load_audio

PROMPT = Path("/usr/share/asterisk/sounds/en/demo-enterkeywords.g722")


def _write_wav(path: Path, samples: np.ndarray, rate: int, sampwidth: int = 2) -> Path:
    """``samples``: int16 [N] or [N, C] (sampwidth 2), or uint8 (sampwidth 1)."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(sampwidth)
        f.setframerate(rate)
        f.writeframes(np.ascontiguousarray(samples).tobytes())
    return path


def _tone(freq: float, n: int, rate: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def _have_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def _write_compressed(path: Path, codec: str, audio: np.ndarray, rate: int) -> None:
    """Encode mono float32 audio with PyAV (the codec's own sample format and frame size)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt = stream.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        frame.sample_rate = rate
        rs = av.AudioResampler(format=fmt, layout="mono", rate=rate,
                               frame_size=stream.codec_context.frame_size or None)
        for f in rs.resample(frame) + rs.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _check_error(exc: pytest.ExceptionInfo[ValueError], path: Path, *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg
    for w in words:
        assert w in msg


# ---- decoding ---------------------------------------------------------------------------------


def test_decodes_g722_prompt() -> None:
    if not PROMPT.is_file():
        pytest.skip(f"{PROMPT} not installed (asterisk-core-sounds-en-g722)")
    audio, rate = load_audio(PROMPT)
    assert rate == 16_000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 5.0 < len(audio) / rate < 8.0
    assert np.all(np.abs(audio) <= 1.0)
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01  # speech, not silence


def test_stereo_44k_wav_is_mixed_to_mono(tmp_path: Path) -> None:
    rate, n = 44_100, 44_100 + 123
    left = _tone(440.0, n, rate)
    stereo = np.stack([(left * 32767).astype(np.int16), np.zeros(n, np.int16)], axis=1)
    audio, got_rate = load_audio(_write_wav(tmp_path / "stereo.wav", stereo, rate))
    assert got_rate == rate
    assert audio.dtype == np.float32 and audio.shape == (n,)
    # The tone survives the downmix, attenuated (the right channel is silent), not distorted.
    peak = np.abs(audio).max()
    assert 0.2 < peak < 0.5
    corr = np.corrcoef(audio, left)[0, 1]
    assert corr > 0.999


def test_mono_int16_wav_round_trips(tmp_path: Path) -> None:
    rate = 16_000
    tone = _tone(300.0, rate // 2, rate)
    pcm = np.round(tone * 32767).astype(np.int16)
    audio, got_rate = load_audio(_write_wav(tmp_path / "mono.wav", pcm, rate))
    assert got_rate == rate
    np.testing.assert_allclose(audio, pcm / 32768.0, atol=1e-4)


@pytest.mark.parametrize(("codec", "suffix"), [("libmp3lame", ".mp3"), ("aac", ".m4a")])
def test_compressed_duration(tmp_path: Path, codec: str, suffix: str) -> None:
    if not _have_encoder(codec):
        pytest.skip(f"FFmpeg in PyAV has no {codec} encoder")
    rate, seconds = 44_100, 1.5
    path = tmp_path / f"tone{suffix}"
    _write_compressed(path, codec, _tone(440.0, int(rate * seconds), rate), rate)
    audio, got_rate = load_audio(path)
    assert got_rate == rate
    assert abs(len(audio) / rate - seconds) <= 0.05
    assert np.all(np.abs(audio) <= 1.0)
    mid = audio[rate // 4:rate]  # away from codec start-up transients
    assert np.sqrt(np.mean(mid.astype(np.float64) ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


# ---- errors -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(ValueError) as exc:
        load_audio(path)
    _check_error(exc, path, "not found")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as exc:
        load_audio(tmp_path)
    _check_error(exc, tmp_path, "not found")


def test_text_file_with_wav_extension(tmp_path: Path) -> None:
    path = tmp_path / "fake.wav"
    path.write_text("this is not audio at all\n" * 20)
    with pytest.raises(ValueError) as exc:
        load_audio(path)
    _check_error(exc, path, "cannot decode")


def test_wav_with_zero_frames(tmp_path: Path) -> None:
    path = _write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16), 16_000)
    with pytest.raises(ValueError) as exc:
        load_audio(path)
    _check_error(exc, path, "no samples")


def test_video_only_file(tmp_path: Path) -> None:
    if not _have_encoder("libx264"):
        pytest.skip("FFmpeg in PyAV has no libx264 encoder")
    path = tmp_path / "video.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(5):
            img = np.full((64, 64, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(ValueError) as exc:
        load_audio(path)
    _check_error(exc, path, "no audio stream")


def test_longer_than_max_seconds(tmp_path: Path) -> None:
    rate = 16_000
    path = _write_wav(tmp_path / "two.wav", np.zeros(2 * rate, np.int16), rate)
    with pytest.raises(ValueError) as exc:
        load_audio(path, max_seconds=1.0)
    _check_error(exc, path, "limit")
    audio, _ = load_audio(path, max_seconds=2.0)
    assert len(audio) == 2 * rate


def test_header_longer_than_an_hour_fails_before_decoding(tmp_path: Path) -> None:
    # 3605 s of 8 kHz 8-bit silence (~29 MB). The container's declared duration is checked
    # before decoding (with 1 s of slack); that check's message says "is 1 h 0 min 5 s long", the
    # decode-time check says "longer than the limit", so the message tells which one fired.
    rate, seconds = 8_000, 3605
    path = _write_wav(tmp_path / "long.wav", np.full(rate * seconds, 128, np.uint8), rate,
                      sampwidth=1)
    with pytest.raises(ValueError) as exc:
        load_audio(path)
    _check_error(exc, path, "1 h 0 min 5 s long", "the limit is 1 h")
