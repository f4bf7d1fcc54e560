"""runtime.evals.sync on real MP4s: the default avatar, rendered by the real rig + neural renderer,
speaks a real asterisk prompt with its jaw following the voice at a known delay; the checker
(PyAV + mediapipe, nothing of ours in the loop) must find that delay."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from runtime.evals.sync import SyncReport, evaluate_sync, lagged_correlation, parabolic_peak

av = pytest.importorskip("av")

SOUNDS = Path("/usr/share/asterisk/sounds/en")
PROMPT = "demo-enterkeywords.g722"
RATE = 48_000
FPS = 25
S = RATE // FPS  # 1920 audio samples per video frame
CLIP = (0.2, 3.8)  # seconds of the prompt used: short silence, then speech
DELAYS_MS = (0, 120, -80)  # mouth behind (+) / ahead of (−) the voice
LATE_AUDIO_S = 0.2  # the "late" file: its audio stream starts this much after the video
HOLE_EVERY = 9  # the "holes" file: every 9th frame has no face
TOL_MS = 25.0


def read_prompt(path: Path) -> np.ndarray:
    """A sound file decoded by PyAV to mono float32 at RATE."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    chunks = []
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks)


def write_mp4(path: Path, frames: list[np.ndarray], audio: np.ndarray | None,
              audio_start: int = 0) -> Path:
    """H.264 (libx264) video at FPS, time_base 1/RATE, pts n·S; AAC mono audio at RATE whose
    first sample has pts ``audio_start`` (samples)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.time_base = Fraction(1, RATE)
        a = None
        if audio is not None:
            a = c.add_stream("aac", rate=RATE)
            a.layout = "mono"
        for n, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = n * S, Fraction(1, RATE)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            for i in range(0, audio.size, 1024):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, i:i + 1024]),
                                               format="flt", layout="mono")
                f.sample_rate, f.pts, f.time_base = RATE, audio_start + i, Fraction(1, RATE)
                c.mux(a.encode(f))
            c.mux(a.encode(None))
    return path


def jaw_track(audio: np.ndarray, frames: int, delay_ms: float) -> np.ndarray:
    """jawOpen [frames] in [0, 0.7]: the level (dB) of the audio slice frame n shows,
    [n·S, (n+1)·S), taken ``delay_ms`` earlier, mapped from [peak − 40 dB, peak] to [0, 0.7]."""
    shift = round(delay_ms * RATE / 1000)
    padded = np.concatenate([np.zeros(RATE), audio, np.zeros(RATE)])
    starts = RATE + np.arange(frames) * S - shift
    rms = np.array([np.sqrt(np.mean(padded[s:s + S] ** 2)) for s in starts])
    db = 20 * np.log10(rms + 1e-8)
    return 0.7 * np.clip((db - (db.max() - 40.0)) / 40.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[int | str, Path]:
    """One talking-avatar MP4 per delay in DELAYS_MS (same audio, jaw shifted), plus "late"
    and "holes", variants of the in-sync one."""
    if not (SOUNDS / PROMPT).is_file():
        pytest.skip(f"asterisk sounds not installed ({SOUNDS / PROMPT})")
    import avatars
    from avatars.rig import NEUTRAL_POSE, Rig, coefficients_from_mapping
    from engines.renderer import NeuralRenderer, to_uint8
    from runtime.compositor import Compositor

    speech = read_prompt(SOUNDS / PROMPT)
    audio = speech[int(CLIP[0] * RATE):int(CLIP[1] * RATE)]
    n_frames = audio.size // S
    audio = audio[:n_frames * S]

    av_ = avatars.load("default")
    size = 256
    rig = Rig.for_avatar(av_, size)
    ren = NeuralRenderer(size, backend="onnxruntime")
    src = ren.prepare(av_)
    comp = Compositor(av_, size)
    out_dir = tmp_path_factory.mktemp("sync")
    paths: dict[int | str, Path] = {}
    for delay in DELAYS_MS:
        jaw = jaw_track(audio, n_frames, delay)
        coeffs = np.stack([coefficients_from_mapping({"jawOpen": float(j)}) for j in jaw])
        kp = rig.keypoints(coeffs, np.tile(NEUTRAL_POSE, (n_frames, 1)))
        crops = np.concatenate([to_uint8(ren.render(src, kp[i:i + 16]))
                                for i in range(0, n_frames, 16)])
        frames = [comp.paste(c) for c in crops]
        paths[delay] = write_mp4(out_dir / f"delay{delay:+d}.mp4", frames, audio)
        if delay == 0:
            # In sync on the container clock, but the audio stream starts LATE_AUDIO_S in: only
            # its first pts says where its samples belong.
            late = int(LATE_AUDIO_S * RATE)
            paths["late"] = write_mp4(out_dir / "late-audio.mp4", frames, audio[late:], late)
            # Every HOLE_EVERY-th frame is a blank grey picture: no face to find there.
            holes = [np.full_like(f, 128) if n % HOLE_EVERY == 0 else f
                     for n, f in enumerate(frames)]
            paths["holes"] = write_mp4(out_dir / "holes.mp4", holes, audio)
    return paths


@pytest.fixture(scope="module")
def reports(videos: dict[int | str, Path]) -> dict[int | str, SyncReport]:
    return {d: evaluate_sync(p) for d, p in videos.items()}


def test_in_sync(reports: dict[int | str, SyncReport]) -> None:
    r = reports[0]
    assert abs(r.av_offset_ms) <= TOL_MS, r
    assert r.corr >= 0.6, r
    assert r.frames == round((CLIP[1] - CLIP[0]) * FPS)
    assert r.frames_without_face == 0
    assert r.fps == pytest.approx(FPS, rel=1e-6)
    assert r.audio_seconds == pytest.approx(CLIP[1] - CLIP[0], abs=0.05)


def test_mouth_lagging_is_positive(reports: dict[int | str, SyncReport]) -> None:
    r = reports[120]
    assert r.av_offset_ms == pytest.approx(120.0, abs=TOL_MS), r
    assert r.corr >= 0.6, r
    assert r.frames_without_face == 0


def test_mouth_leading_is_negative(reports: dict[int | str, SyncReport]) -> None:
    r = reports[-80]
    assert r.av_offset_ms == pytest.approx(-80.0, abs=TOL_MS), r
    assert r.corr >= 0.6, r
    assert r.frames_without_face == 0


def test_audio_start_on_container_clock(reports: dict[int | str, SyncReport]) -> None:
    r = reports["late"]
    # Placing the audio at t = 0 instead of its first pts measures about +180 ms here.
    assert abs(r.av_offset_ms) <= TOL_MS, r
    assert r.corr >= 0.6, r
    assert r.audio_seconds == pytest.approx(CLIP[1] - CLIP[0] - LATE_AUDIO_S, abs=0.05)


def test_frames_without_face_are_counted_and_bridged(
        reports: dict[int | str, SyncReport]) -> None:
    r = reports["holes"]
    assert r.frames_without_face == len(range(0, r.frames, HOLE_EVERY))
    assert abs(r.av_offset_ms) <= TOL_MS, r
    assert r.corr >= 0.6, r


def test_report_json(reports: dict[int | str, SyncReport]) -> None:
    doc = reports[0].to_json()
    assert set(doc) == {"av_offset_ms", "corr", "frames", "frames_without_face", "fps",
                        "audio_seconds"}
    assert json.loads(json.dumps(doc)) == doc


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        evaluate_sync(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(ValueError, match=r"cannot decode .*notes\.mp4"):
        evaluate_sync(fake)


def test_video_without_audio(tmp_path: Path) -> None:
    frames = [np.full((64, 64, 3), 40 * (i % 5), np.uint8) for i in range(30)]
    path = write_mp4(tmp_path / "silent.mp4", frames, None)
    with pytest.raises(ValueError, match="no audio stream"):
        evaluate_sync(path)


def test_too_short(tmp_path: Path) -> None:
    frames = [np.zeros((64, 64, 3), np.uint8) for _ in range(12)]  # 0.48 s
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(12 * S) / RATE)).astype(np.float32)
    path = write_mp4(tmp_path / "short.mp4", frames, tone)
    with pytest.raises(ValueError, match="too short"):
        evaluate_sync(path)


def test_bad_max_lag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_lag_ms"):
        evaluate_sync(tmp_path / "any.mp4", max_lag_ms=0)


def test_lag_sign_and_peak_refinement() -> None:
    rng = np.random.default_rng(0)
    env = np.convolve(rng.standard_normal(600), np.hanning(9), "same")
    gap = np.roll(env, 7)  # gap[k] = env[k − 7]: the mouth 7 steps behind
    corr = lagged_correlation(gap, env, max_lag=20, min_overlap=100)
    assert int(np.nanargmax(corr)) - 20 == 7
    assert corr[27] == pytest.approx(1.0, abs=1e-9)
    # A parabola sampled at −1, 0, 1 with its vertex at +0.3.
    c = [-(x - 0.3) ** 2 for x in (-1.0, 0.0, 1.0)]
    assert parabolic_peak(*c) == pytest.approx(0.3)
    assert parabolic_peak(1.0, 1.0, 1.0) == 0.0
