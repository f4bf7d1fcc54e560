"""``facecast bench latency``: its detectors on frames with known timing (and the bench harness's
readings of received streams), and one short real run (server child process, aiortc peer on
loopback, Asterisk speech)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from runtime.bench import harness as H
from runtime.bench import latency as B


def _frames(n: int, moves_at: list[int], seed: int = 0) -> list[np.ndarray]:
    """Mouth-box crops: grey noise (codec/drift noise, ±2 levels) and a dark 'opening' (the
    cavity) from each frame index in ``moves_at`` for 10 frames."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.full((24, 48, 3), 150.0) + rng.normal(0, 2, (24, 48, 3))
        if any(m <= i < m + 10 for m in moves_at):
            img[8:16, 12:36] = 40.0
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def test_mouth_latency_finds_the_first_moving_frame() -> None:
    fps = 25.0
    arrivals = np.arange(300) / fps
    frames = np.array([H.darkness(f) for f in _frames(300, [105, 205])])
    # onsets sent 0.2 s before the frames that move; a third prompt whose mouth never moves
    onsets = [(105 / fps - 0.2, 105 / fps + 1.0, "a"), (205 / fps - 0.2, 205 / fps + 1.0, "b"),
              (270 / fps, 299 / fps, "c")]
    lat = B.mouth_latencies(frames, arrivals, onsets)
    assert lat[0] == pytest.approx(200.0, abs=1e-6)
    assert lat[1] == pytest.approx(200.0, abs=1e-6)
    assert np.isnan(lat[2])


def test_mouth_latency_needs_idle_before_speech() -> None:
    with pytest.raises(RuntimeError, match="idle"):
        B.mouth_latencies(np.zeros(20), np.arange(20) / 25.0, [(0.1, 0.5, "a")])


def test_voice_latency_is_the_first_loud_frame() -> None:
    quiet = np.full(960, 1e-4, np.float32)
    loud = np.full(960, 0.3, np.float32)
    audio = [(k * 0.02, k * 960, loud if 60 <= k < 100 else quiet) for k in range(150)]
    lat = B.voice_latencies(audio, [(1.0, 2.5, "a"), (2.1, 2.9, "b")])
    assert lat[0] == pytest.approx(200.0, abs=1e-6)
    assert np.isnan(lat[1])


def test_clock_drift_sees_a_stream_falling_behind() -> None:
    """Video whose arrival lags its pts grows 20 ms over 200 s; the two 60 s windows'
    centres (30 s, 170 s) differ by 14 ms of it."""
    t = np.arange(0, 200, 0.04)
    video = [(x + 0.1 + 0.02 * x / 200, round(x * 90000)) for x in t]
    audio = [(x + 0.05, round(x * 48000)) for x in np.arange(0, 200, 0.02)]
    assert H.clock_drift_ms(video, audio, 0.0, 200.0) == pytest.approx(14.0, abs=1.0)
    steady = [(x + 0.1, round(x * 90000)) for x in t]
    assert abs(H.clock_drift_ms(steady, audio, 0.0, 200.0)) < 0.5


def _syllables(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like voice at 48 kHz (noise bursts of 80-300 ms with 60-400 ms pauses) and its
    on/off gate per sample."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 48000)
    gate = np.zeros(n, bool)
    i = 4800
    while i < n:
        length = int(rng.uniform(0.08, 0.3) * 48000)
        gate[i:i + length] = True
        i += length + int(rng.uniform(0.06, 0.4) * 48000)
    voice = (rng.normal(0, 0.2, n) * gate).astype(np.float32)
    return voice, gate


def test_offset_is_not_moved_by_a_lost_audio_frame() -> None:
    """A mouth exactly in time with its voice reads about 0 ms, also when the receiver lost
    three 20 ms audio frames early on (laid out on their pts: a gap); concatenating the frames
    instead pulls the rest of the voice 60 ms early, read as the mouth lagging."""
    fps, seconds = 25.0, 40.0
    voice, gate = _syllables(seconds)
    frames = [(k * 0.02, k * 960, voice[k * 960:(k + 1) * 960])
              for k in range(len(voice) // 960)]
    received = frames[:100] + frames[103:]  # three frames lost at 2 s
    centres = (np.arange(int(seconds * fps)) + 0.5) / fps
    mouth = np.array([gate[int((t - 0.02) * 48000):int((t + 0.02) * 48000)].mean()
                      for t in centres])
    audio_t = np.array([t for t, _p, _x in received])
    laid, missing = H.audio_on_pts(received)
    assert missing == 3 * 960
    assert laid.shape == voice.shape
    off, corr = H.av_offset(centres, mouth, audio_t, laid, 1.0, seconds - 1.0)
    assert abs(off) < 5.0 and corr > 0.8
    joined = np.concatenate([x for _t, _p, x in received])
    off_joined, _ = H.av_offset(centres, mouth, audio_t, joined, 1.0, seconds - 1.0)
    assert off_joined > 45.0


def test_bench_latency_command_runs_end_to_end() -> None:
    """A short real run prints the JSON the README documents, with sane values."""
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "bench", "latency", "--sessions",
                          "1", "--seconds", "6", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=220, check=True)
    r = json.loads(out.stdout)
    assert r["sessions"] == 1 and r["per_session"][0]["frames"] > 100
    assert r["onset_to_mouth_ms"]["n"] >= 1 and r["voice_latency_ms"]["n"] >= 1
    # the voice cannot come back before it was sent, nor (on loopback) seconds later
    assert 40.0 < r["voice_latency_ms"]["median"] < 2000.0
    assert r["onset_to_mouth_ms"]["median"] > 40.0
    assert r["per_prompt"][0]["prompt"]
    assert abs(r["per_session"][0]["av_clock_drift_ms"]) < 40.0
    assert 0.0 <= r["per_session"][0]["audio_missing_ms"] < 1000.0
    assert r["server"]["rss_end_mb"] > 0 and r["server"]["backend"]
