"""Webcam-driven mode on real components: a rendered clip of the default avatar with known motion
is read by VideoSource as a webcam, tracked by mediapipe and retargeted onto a second, enrolled
avatar; handover to the audio mouth when the face is lost; the session hook; input errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from avatars.retarget import FAST, FIT_POINTS, Retargeter
from avatars.rig import COEFFICIENTS, INDEX, N_COEFFICIENTS, NEUTRAL_POSE, Rig, in_domain
from runtime.webcam.driver import DriverParams, LiveWebcamDrive, WebcamDriver, open_webcam_drive
from runtime.webcam.source import CameraError, VideoSource

pytest.importorskip("mediapipe")

TEXT = "Please bring a map and a pen to the old bridge."


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[dict, Path]:
    """The end-to-end eval on a short clip (size 256): (report, work folder with driver.mp4)."""
    from runtime.evals.webcam import evaluate_webcam

    work = tmp_path_factory.mktemp("webcam")
    report = evaluate_webcam(text=TEXT, lead_in_s=1.0, size=256, backend="onnxruntime",
                             work_dir=work)
    return report, work


def test_end_to_end_known_motion(evaluated) -> None:
    report, work = evaluated
    print(report)
    assert report["target"] == "grace_hopper" and report["driver"] == "default"
    assert report["frames"] >= 60
    assert report["tracked_fraction"] >= 0.95, report
    assert report["driven_fraction"] >= 0.9, report
    # bounds: measured values (see the final report) with margin
    assert report["coeff_mae"] < 0.12, report["coeff_mae"]
    assert report["coeff_mae_by_name"]["jawOpen"] < 0.1, report["coeff_mae_by_name"]
    assert report["coeff_corr"]["jawOpen"] > 0.8, report["coeff_corr"]
    pose = report["pose"]
    for angle in ("pitch", "yaw", "roll"):
        assert pose[f"{angle}_deg_mae"] < 2.0, pose
    assert pose["tx_mae"] < 0.02 and pose["ty_mae"] < 0.02, pose
    assert report["target_keypoint_nme"] < 0.05
    assert report["target_mouthClose_mae"] < 0.25
    assert report["ms_per_frame"]["fit_points"] == len(FIT_POINTS)
    assert (work / "driver.mp4").is_file()


def _decoded(work: Path) -> list[np.ndarray]:
    with VideoSource(work / "driver.mp4") as source:
        assert not source.is_camera and source.width == 512 and source.height == 512
        return [f.rgb for f in source]


def test_face_lost_hands_over_to_audio_and_back(evaluated) -> None:
    _, work = evaluated
    frames = _decoded(work)
    lost = range(30, 50)  # 0.8 s without a face
    import avatars

    driver = WebcamDriver(Rig.for_avatar(avatars.load("default"), 256), fps=25)
    audio_mouth = np.zeros(N_COEFFICIENTS)
    audio_mouth[INDEX["jawOpen"]] = 0.7  # what the voice would show
    idle_pose = np.array([0.05, -0.04, 0.0, 0.0, 0.0, 1.0])
    out = []
    for i, rgb in enumerate(frames[:70]):
        if i in lost:
            rgb = np.zeros_like(rgb)
        out.append(driver.step(rgb, audio_mouth, idle_pose))
    driver.close()
    tracked = np.array([o.tracked for o in out])
    assert out[0].calibrating and not out[0].tracked          # neutral from the first frames
    assert tracked[10:30].all() and not tracked[30:50].any()
    assert tracked[52:70].all(), np.flatnonzero(~tracked[50:70]) + 50  # tracking resumes
    # before the loss the webcam drives; well into it the audio mouth and idle head do
    assert out[29].weight == 1.0 and out[29].pose_weight == 1.0
    assert out[31].coeffs[INDEX["jawOpen"]] == pytest.approx(out[29].coeffs[INDEX["jawOpen"]],
                                                              abs=0.05)  # held at first
    assert out[45].weight == 0.0
    np.testing.assert_allclose(out[45].coeffs, audio_mouth, atol=1e-9)
    assert out[49].pose_weight == 0.0
    np.testing.assert_allclose(out[49].pose, idle_pose, atol=1e-9)
    # the ease is smooth: no frame-to-frame jump larger than a fraction of the gap
    pose = np.stack([o.pose for o in out[28:60]])
    print(np.degrees(np.abs(np.diff(pose[:, :3], axis=0))).max(axis=1).round(2))
    assert np.abs(np.diff(pose[:, :3], axis=0)).max() < 0.05  # rad per frame
    # back to the webcam after the attack
    assert out[60].weight == 1.0 and out[60].pose_weight == 1.0


def test_fast_retargeter_round_trip(default_avatar) -> None:
    """The fast preset recovers rig motion from keypoints alone, warm-started along a sequence."""
    rig = Rig.for_avatar(default_avatar, 256)
    fit = Retargeter(default_avatar.crop_landmarks(256), 256, FAST)
    assert len(FIT_POINTS) < 200
    rng = np.random.default_rng(7)
    c = np.zeros(N_COEFFICIENTS)
    pose = NEUTRAL_POSE.copy()
    worst_c = worst_deg = 0.0
    errors = []
    for _ in range(20):  # a random walk, faster than real faces move between video frames
        c = np.clip(c + rng.normal(0, 0.08, N_COEFFICIENTS), 0, 1)
        if not in_domain(c)[0]:
            c[INDEX["mouthClose"]] = 0.0
        pose = pose + np.concatenate([np.radians(rng.normal(0, 1.5, 3)),
                                      rng.normal(0, 0.005, 2), [0.0]])
        res = fit.fit(rig.keypoints(c[None], pose[None])[0])
        errors.append(np.abs(res.coeffs - c))
        worst_c = max(worst_c, float(errors[-1].max()))
        worst_deg = max(worst_deg, float(np.degrees(np.abs(res.pose[:3] - pose[:3])).max()))
        assert res.nfev <= 8
    # measured: mean 0.0014, worst 0.077 (mouthStretchRight vs smile), angles worst 1.2°
    assert float(np.mean(errors)) < 0.01
    assert worst_c < 0.15, worst_c
    assert worst_deg < 2.5, worst_deg


def test_session_consults_the_drive_hook(default_avatar) -> None:
    from engines.motion import MotionEngine
    from runtime.live.scheduler import AvatarState
    from runtime.live.session import Session

    rig = Rig.for_avatar(default_avatar, 256)
    state = AvatarState("default", default_avatar, None, rig, None)
    forced_c = np.zeros(N_COEFFICIENTS)
    forced_c[INDEX["jawOpen"]] = 0.8
    forced_p = np.array([0.0, 0.2, 0.0, 0.0, 0.0, 1.0])
    seen = []

    def drive(coeffs, pose):
        seen.append((coeffs.shape, pose.shape))
        return forced_c, forced_p

    session = Session("s", state, MotionEngine(), fps=25, drive=drive)
    job = session.advance()
    assert seen == [((N_COEFFICIENTS,), (6,))]
    np.testing.assert_allclose(job.keypoints, rig.keypoints(forced_c[None], forced_p[None])[0])
    session.drive = None  # without a hook the behaviour layer's output is used
    assert not np.allclose(session.advance().keypoints, job.keypoints)


def test_live_drive_from_a_file_as_webcam(evaluated, default_avatar) -> None:
    """LiveWebcamDrive in its thread, fed in real time: the per-frame override a session uses."""
    _, work = evaluated
    drive = open_webcam_drive(work / "driver.mp4", default_avatar, size=256, fps=25)
    assert isinstance(drive, LiveWebcamDrive)
    try:
        idle = np.zeros(N_COEFFICIENTS), NEUTRAL_POSE.copy()
        deadline = time.monotonic() + 10.0
        while drive.frames_tracked < 10 and time.monotonic() < deadline and drive.error is None:
            coeffs, pose = drive(*idle)
            assert coeffs.shape == (N_COEFFICIENTS,) and pose.shape == (6,)
            time.sleep(0.04)
        assert drive.error is None
        assert drive.frames_tracked >= 10
    finally:
        drive.close()


def test_video_source_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        VideoSource(tmp_path / "missing.mp4")
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a readable video"):
        VideoSource(bad)
    with pytest.raises(ValueError, match="folder"):
        VideoSource(tmp_path)
    audio_only = tmp_path / "audio.wav"
    _write_wav(audio_only)
    with pytest.raises(ValueError, match="no video stream"):
        VideoSource(audio_only)
    for missing in (99, "99", "/dev/video99"):
        with pytest.raises(CameraError, match="no camera 99"):
            VideoSource(missing)
    assert issubclass(CameraError, OSError)


def _write_wav(path: Path) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(1600, np.int16).tobytes())


def test_driver_rejects_bad_input(default_avatar) -> None:
    driver = WebcamDriver(fps=25, params=DriverParams(calibration_frames=1))
    try:
        with pytest.raises(ValueError, match="uint8"):
            driver.step(np.zeros((8, 8), np.float32), np.zeros(N_COEFFICIENTS), NEUTRAL_POSE)
        with pytest.raises(ValueError, match="fallback"):
            driver.step(np.zeros((64, 64, 3), np.uint8), np.zeros(3), NEUTRAL_POSE)
        with pytest.raises(ValueError, match="neutral"):
            driver.calibrate(np.zeros((10, 3)))
    finally:
        driver.close()
    assert COEFFICIENTS[INDEX["jawOpen"]] == "jawOpen"
