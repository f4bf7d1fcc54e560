"""``facecast eval webcam``: webcam-driven mode end to end, on a face video whose motion is known.

1. **Known motion**: one avatar (the *driver*, default ``default``) speaks a sentence through
   ``runtime.offline.render.render_audio`` (espeak-ng, or any ``--audio`` file), with ``lead_in_s`` of
   silence first so the driver's face starts at rest. The render returns the rig input of every
   frame (``RenderResult.animation``: coefficients [F, 19] and head pose [F, 6]): the ground
   truth.
2. **Webcam**: that MP4 is read by ``runtime.webcam.source.VideoSource`` exactly as a camera's
   frames would be, and ``WebcamDriver`` tracks it (mediapipe Face Mesh, video mode), calibrates
   the driver's neutral, retargets and smooths, for a second avatar (the *target*; default: the
   held-out portrait ``grace_hopper`` of ``runtime/evals/portraits.py``, a US Navy photograph shipped in
   matplotlib's wheel, enrolled into a temporary folder).
3. **Report** (JSON): frames, ``tracked_fraction`` (frames whose face mediapipe found and the
   fit accepted, calibration frames included), ``driven_fraction`` (frames whose output came
   from the webcam: all but the calibration frames when tracking holds), per-coefficient and
   overall mean absolute error of the coefficients (as the webcam gives them to the *driver*
   avatar's own rig, so they are comparable with the known values), pose errors (pitch/yaw/roll in degrees; tx, ty in fractions of the driver's
   render crop; scale), the target's keypoint error (mean distance between the target rig posed
   with the known motion carried over and with what the webcam gave it, in target IODs), how
   much of the requested lip gap mediapipe sees through the renderer (``lip_gap_seen_vs_
   requested``), and milliseconds per frame of tracking and of retargeting. ``--out`` also
   renders the target avatar driven by the webcam; ``--work-dir`` keeps the driver video and
   ``webcam_eval.npz`` (known and estimated values per frame, landmarks, neutral).

What the errors include: the renderer's imperfections, mediapipe's (a different model judging
rendered pixels), the calibration (the neutral is taken from the first tracked frames, as live),
and the smoothing lag. The pixels show the *rendered* face: the neutral taken from the video is
mediapipe's view of the rendered rest face, which is why the lead-in matters (``calibration``:
``"first"`` = the live method, the median of the first frames; ``"source"`` = mediapipe on the
driver avatar's own still image, which the renderer reproduces at rest).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from avatars.rig import COEFFICIENTS, INDEX, N_COEFFICIENTS, NEUTRAL_POSE, POSE_NAMES

DEFAULT_TEXT = ("Please bring a map, a pen and your boots. We meet at the old bridge at nine, "
                "then walk up the hill together.")
"""Driving sentence: bilabials (p, b, m) to close the lips, open vowels to drop the jaw."""
LEAD_IN_S = 1.0
"""Silence before the speech: the driver's face is at rest while the neutral is calibrated."""
TAIL_S = 0.5
REPORTED = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft",
            "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp")
"""Coefficients reported one by one (all 19 enter the overall MAE)."""
HELD_OUT_PORTRAIT = {
    "name": "grace_hopper",
    "package": "matplotlib",
    "path": "mpl-data/sample_data/grace_hopper.jpg",
    "licence": "Public domain (US Navy photograph, work of the US federal government)",
    "attribution": "US Navy; Commodore Grace M. Hopper, 1984",
}
"""The default target: ``runtime/evals/portraits.py``'s held-out portrait (never trained on)."""


def held_out_portrait_path() -> Path:
    """Path of the held-out portrait in matplotlib's installed package data.

    Raises FileNotFoundError (with the install command) when matplotlib is missing."""
    import importlib.util

    spec = importlib.util.find_spec(HELD_OUT_PORTRAIT["package"])
    for base in (spec.submodule_search_locations or []) if spec else []:
        f = Path(base) / HELD_OUT_PORTRAIT["path"]
        if f.is_file():
            return f
    raise FileNotFoundError("the held-out portrait grace_hopper.jpg is not installed; "
                            "pip install matplotlib (or pass --target NAME)")


def enroll_held_out(out_dir: Path):
    """Enroll the held-out portrait as avatar ``grace_hopper`` under ``out_dir``; returns the
    loaded ``avatars.Avatar``."""
    import avatars
    from avatars.enroll import EnrollOptions, enroll

    p = HELD_OUT_PORTRAIT
    folder = enroll(held_out_portrait_path(), p["name"], out_dir, EnrollOptions(
        consent="Public-domain photograph; enrolled only as an evaluation target of facecast.",
        source=f"{p['package']} package data, {p['path']}", licence=p["licence"],
        attribution=p["attribution"], overwrite=True))
    return avatars.load(folder)


def _speech(text: str | None, audio: str | Path | None, voice: str | None
            ) -> tuple[np.ndarray, int]:
    if audio is not None:
        from runtime.audio.decode import load_audio

        return load_audio(audio)
    from runtime.audio.tts import check_text, make_tts

    check_text(text or DEFAULT_TEXT)
    speech = make_tts().synthesize(text or DEFAULT_TEXT, voice)
    return speech.audio.astype(np.float32), speech.sample_rate


def source_neutral(avatar, repeats: int = 5) -> np.ndarray:
    """mediapipe's (video mode) landmarks of ``avatar``'s own still image, median of
    ``repeats`` tracked passes: float64 [478, 3] pixels. Raises ValueError without a face."""
    from runtime.webcam.tracker import FaceTracker

    tracker = FaceTracker()
    try:
        faces = [lm for lm in (tracker.track(avatar.image) for _ in range(repeats))
                 if lm is not None]
    finally:
        tracker.close()
    if not faces:
        raise ValueError(f"mediapipe finds no face in avatar {avatar.name!r}'s image")
    return np.median(np.stack(faces), axis=0)


def _stats_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"mean": float("nan"), "median": float("nan"), "p95": float("nan")}
    ms = np.asarray(seconds) * 1000.0
    return {"mean": round(float(ms.mean()), 2), "median": round(float(np.median(ms)), 2),
            "p95": round(float(np.percentile(ms, 95)), 2)}


def _errors(known_c: np.ndarray, est_c: np.ndarray, known_p: np.ndarray,
            est_p: np.ndarray) -> dict[str, Any]:
    """Errors on matched frames: coeffs [N, 19], pose [N, 6] (est translations already in the
    known's units)."""
    err = np.abs(est_c - known_c)
    per = {name: round(float(err[:, INDEX[name]].mean()), 4) for name in REPORTED}
    for side_less in ("mouthSmile", "eyeBlink"):
        cols = [INDEX[side_less + "Left"], INDEX[side_less + "Right"]]
        per[side_less] = round(float(err[:, cols].mean()), 4)
    deg = np.degrees(est_p[:, :3] - known_p[:, :3])
    pose = {}
    for i, name in enumerate(POSE_NAMES[:3]):
        pose[f"{name}_deg_mae"] = round(float(np.abs(deg[:, i]).mean()), 3)
        pose[f"{name}_deg_bias"] = round(float(deg[:, i].mean()), 3)
        pose[f"{name}_deg_p95"] = round(float(np.percentile(np.abs(deg[:, i]), 95)), 3)
    for i, name in ((3, "tx"), (4, "ty"), (5, "scale")):
        pose[f"{name}_mae"] = round(float(np.abs(est_p[:, i] - known_p[:, i]).mean()), 5)
    corr = {}
    for name in ("jawOpen", "mouthClose", "eyeBlinkLeft", "eyeBlinkRight"):
        a, b = known_c[:, INDEX[name]], est_c[:, INDEX[name]]
        ok = a.std() > 1e-6 and b.std() > 1e-6
        corr[name] = round(float(np.corrcoef(a, b)[0, 1]), 3) if ok else None
    return {"coeff_mae": round(float(err.mean()), 4), "coeff_mae_by_name": per,
            "coeff_max_abs": round(float(err.max()), 4), "corr": corr, "pose": pose}


def evaluate_webcam(driver: str = "default", target: str | None = None,
                    text: str | None = None, audio: str | Path | None = None,
                    voice: str | None = None, lead_in_s: float = LEAD_IN_S, fps: int = 25,
                    size: int = 256, seed: int = 0, backend: str = "auto",
                    calibration: str = "first", smooth: bool = True,
                    out_video: str | Path | None = None,
                    work_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the end-to-end webcam evaluation (module docstring) and return the JSON report.

    Args:
        driver: avatar that is rendered speaking (its motion is known).
        target: avatar the webcam drives (name or bundle folder); None: the held-out portrait.
        text / audio / voice: what the driver says (espeak-ng text, or an audio file).
        lead_in_s: seconds of silence before the speech.
        fps, size, seed, backend: the driver render (``runtime.offline.render.RenderOptions``).
        calibration: ``"first"`` (live method) or ``"source"`` (see module docstring).
        smooth: One Euro smoothing in the driver.
        out_video: also render the target avatar driven by the webcam to this MP4.
        work_dir: keep the driver video and the target bundle here (default: a temporary
            folder, removed afterwards).

    Raises ValueError for a bad choice or input, FileNotFoundError for a missing portrait/file.
    """
    import avatars
    from avatars.rig import Rig, closure_for_gap, expression_lip_gap
    from runtime.offline.render import RenderOptions, render_audio
    from runtime.webcam.driver import DriverParams, WebcamDriver
    from runtime.webcam.source import VideoSource

    if calibration not in ("first", "source"):
        raise ValueError(f"calibration must be 'first' or 'source', got {calibration!r}")
    if not 0.2 <= lead_in_s <= 10.0:
        raise ValueError(f"lead-in must be 0.2–10 s, got {lead_in_s:g}")
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="facecast-webcam-eval-")
        work = Path(tmp.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        driver_avatar = avatars.load(driver)
        target_avatar = avatars.load(target) if target else enroll_held_out(work / "avatars")
        speech, rate = _speech(text, audio, voice)
        clip = np.concatenate([np.zeros(int(lead_in_s * rate), np.float32), speech,
                               np.zeros(int(TAIL_S * rate), np.float32)])
        video_path = work / "driver.mp4"
        rendered = render_audio(driver_avatar, clip, rate, video_path,
                                RenderOptions(fps=fps, size=size, backend=backend, seed=seed))
        anim = rendered.animation
        assert anim is not None

        target_rig = Rig.for_avatar(target_avatar, size)
        # the live calibration takes the first frames, whose lips are closed (the motion model's
        # silence rest state); the driver avatar's still image has its photo's parted lips
        wd = WebcamDriver(target_rig, fps=fps, params=DriverParams(
            smooth=smooth, neutral_lips_closed=calibration == "first"))
        if calibration == "source":
            wd.calibrate(source_neutral(driver_avatar))
        fallback_c, fallback_p = np.zeros(N_COEFFICIENTS), NEUTRAL_POSE.copy()
        rows: list[tuple[int, Any]] = []
        out_c, out_p = [], []
        frames = faces = 0
        track_s: list[float] = []
        fit_s: list[float] = []
        nfev: list[int] = []
        calibrated_at = -1 if wd.calibrated else None  # -1: calibrated before the first frame
        started = time.perf_counter()
        with VideoSource(video_path) as source:
            for frame in source:
                faces_before = wd.stats["faces"]
                obs = wd.observe(frame.rgb, frame.time)
                faces += wd.stats["faces"] - faces_before
                if calibrated_at is None and wd.calibrated:
                    calibrated_at = frame.index
                out = wd.blend.step(obs, fallback_c, fallback_p, 1.0 / fps)
                out_c.append(out.coeffs)
                out_p.append(out.pose)
                if obs is not None:
                    rows.append((frame.index, obs))
                    track_s.append(obs.track_seconds)
                    fit_s.append(obs.fit.seconds)
                    nfev.append(obs.fit.nfev)
                frames += 1
        wall = time.perf_counter() - started
        wd.close()
        n = min(frames, len(anim.coeffs))
        rows = [(i, o) for i, o in rows if i < n]
        if not rows:
            raise ValueError("the face was never tracked in the driver video")
        idx = np.array([i for i, _ in rows])
        known_c, known_p = anim.coeffs[idx], anim.pose[idx]
        # The coefficients and pose the webcam gives the *driver* avatar's own rig are
        # comparable with the known ones (same neutral lip gap, translations in fractions of
        # the driver's render crop); the target gets the same except mouthClose (its own lip
        # gap) and the translation's scale (``WebcamDriver.map_to``).
        driver_rig = Rig.for_avatar(driver_avatar, size)

        def on_driver(c: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pairs = [wd.map_to(ci, pi, driver_rig) for ci, pi in zip(c, p)]
            return np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])

        est_c, est_p = on_driver(np.stack([o.driver_coeffs for _, o in rows]),
                                 np.stack([o.driver_pose for _, o in rows]))
        raw_c, raw_p = on_driver(np.stack([o.fit.coeffs for _, o in rows]),
                                 np.stack([o.fit.pose for _, o in rows]))
        smoothed = _errors(known_c, est_c, known_p, est_p)
        raw = _errors(known_c, raw_c, known_p, raw_p)
        # the target posed with what the webcam gave it vs with the known motion carried over
        # the same way (mouthClose for the driver's known lip gap, translation per IOD)
        ideal_c = known_c.copy()
        gaps = expression_lip_gap(driver_rig, known_c)
        ideal_c[:, INDEX["mouthClose"]] = [closure_for_gap(target_rig, c, g)
                                           for c, g in zip(known_c, gaps)]
        ideal_p = known_p.copy()
        ideal_p[:, 3:5] *= (driver_rig.size / driver_rig.iod) * (target_rig.iod /
                                                                  target_rig.size)
        tgt_c = np.stack([o.coeffs for _, o in rows])
        tgt_p = np.stack([o.pose for _, o in rows])
        kp_known = target_rig.keypoints(ideal_c, ideal_p)
        kp_est = target_rig.keypoints(tgt_c, tgt_p)
        target_nme = float(np.linalg.norm(kp_known - kp_est, axis=-1).mean() / target_rig.iod)
        target_close_mae = float(np.abs(tgt_c - ideal_c)[:, INDEX["mouthClose"]].mean())
        # how much of the requested lip gap reaches mediapipe through the renderer: known gap on
        # the driver's rig vs the gap the webcam measured (relative to the calibrated rest face)
        known_gap = expression_lip_gap(driver_rig, known_c) - expression_lip_gap(
            driver_rig, np.eye(N_COEFFICIENTS)[INDEX["mouthClose"]])
        seen_gap = expression_lip_gap(wd.retargeter.rig,
                                      np.stack([o.driver_coeffs for _, o in rows]))
        seen_gap = seen_gap - wd.neutral_lip_gap
        gain, offset = np.polyfit(known_gap, seen_gap, 1)
        speech_frames = anim.coeffs[idx][:, INDEX["jawOpen"]] > 0.05

        report: dict[str, Any] = {
            "driver": driver_avatar.name,
            "target": target_avatar.name,
            "video": {"frames": rendered.frames, "fps": rendered.fps,
                      "width": rendered.width, "height": rendered.height,
                      "renderer_size": size, "seconds": round(rendered.audio_seconds, 3),
                      "lead_in_s": lead_in_s,
                      "driver_iod_px": round(float(driver_avatar.iod_px), 2)},
            "frames": n,
            "face_found_fraction": round(faces / max(frames, 1), 4),
            "tracked_fraction": round((wd.stats["faces"] - wd.stats["rejected"]) / max(frames, 1),
                                      4),
            "driven_fraction": round(len(rows) / n, 4),
            "calibration": calibration,
            "calibration_frames": (wd.params.calibration_frames if calibration == "first"
                                   else 0),
            "calibrated_at_frame": calibrated_at,
            "driven_fraction_after_calibration": round(
                len(rows) / max(n - (calibrated_at + 1 if calibrated_at is not None else 0), 1),
                4),
            "coeff_mae": smoothed["coeff_mae"],
            "coeff_mae_by_name": smoothed["coeff_mae_by_name"],
            "coeff_max_abs": smoothed["coeff_max_abs"],
            "coeff_corr": smoothed["corr"],
            "coeff_mae_speaking_frames": round(float(
                np.abs(est_c - known_c)[speech_frames].mean()), 4) if speech_frames.any()
            else None,
            "coeff_mae_if_all_zero": round(float(np.abs(known_c).mean()), 4),
            "pose": smoothed["pose"],
            "unsmoothed": {"coeff_mae": raw["coeff_mae"],
                           "coeff_mae_by_name": raw["coeff_mae_by_name"],
                           "pose": raw["pose"]},
            "known_range": {"jawOpen_max": round(float(anim.coeffs[:, INDEX["jawOpen"]].max()),
                                                 3),
                            "blinks": len(anim.blinks),
                            "pitch_deg_range": [round(float(np.degrees(anim.pose[:, 0].min())),
                                                      2),
                                                round(float(np.degrees(anim.pose[:, 0].max())),
                                                      2)],
                            "yaw_deg_range": [round(float(np.degrees(anim.pose[:, 1].min())), 2),
                                              round(float(np.degrees(anim.pose[:, 1].max())),
                                                    2)]},
            "lip_gap_seen_vs_requested": {"gain": round(float(gain), 3),
                                          "offset_iod": round(float(offset), 4),
                                          "corr": round(float(np.corrcoef(known_gap,
                                                                          seen_gap)[0, 1]), 3)},
            "driver_neutral_lip_gap_iod": round(float(expression_lip_gap(
                wd.retargeter.rig, np.zeros(N_COEFFICIENTS))), 4),
            "target_keypoint_nme": round(target_nme, 4),
            "target_mouthClose_mae": round(target_close_mae, 4),
            "ms_per_frame": {"tracking": _stats_ms(track_s), "retarget": _stats_ms(fit_s),
                             "retarget_nfev_mean": round(float(np.mean(nfev)), 1),
                             "fit_points": len(wd.retargeter.points),
                             "wall_per_frame": round(wall / max(frames, 1) * 1000, 2)},
        }
        if work_dir is not None:  # the raw material, for plots and re-analysis
            np.savez(work / "webcam_eval.npz", known_coeffs=anim.coeffs, known_pose=anim.pose,
                     frames=idx, coeffs=est_c, pose=est_p, raw_coeffs=raw_c, raw_pose=raw_p,
                     landmarks=np.stack([o.landmarks for _, o in rows]),
                     neutral=wd.neutral, target_coeffs=tgt_c, target_pose=tgt_p,
                     ideal_target_coeffs=ideal_c, ideal_target_pose=ideal_p)
        if out_video is not None:
            report["out"] = str(render_driven(target_avatar, np.stack(out_c[:n]),
                                              np.stack(out_p[:n]), clip, rate, fps, size,
                                              backend, out_video))
        return report
    finally:
        if tmp is not None:
            tmp.cleanup()


def render_driven(avatar, coeffs: np.ndarray, pose: np.ndarray, audio: np.ndarray,
                  sample_rate: int, fps: int, size: int, backend: str,
                  out_path: str | Path) -> Path:
    """Render ``avatar`` posed with coeffs [F, 19] and pose [F, 6] (the webcam's output) with
    ``audio`` to an H.264 + AAC MP4 on the project's one clock (``runtime.clock``); returns the
    path. Raises OSError when the output cannot be written."""
    from avatars.rig import Rig
    from engines.audio import OUTPUT_SAMPLE_RATE
    from engines.renderer import NeuralRenderer, to_uint8
    from runtime.audio.resample import resample
    from runtime.clock import AvClock, as_fps
    from runtime.compositor import Compositor
    from runtime.offline.mp4 import Mp4Writer

    out_path = Path(out_path)
    clock = AvClock(as_fps(fps), OUTPUT_SAMPLE_RATE)
    height, width = avatar.image.shape[:2]
    with Mp4Writer(out_path, clock, width, height) as writer:
        renderer = NeuralRenderer(size, backend)
        source = renderer.prepare(avatar)
        keypoints = Rig.for_avatar(avatar, size).keypoints(coeffs, pose)
        compositor = Compositor(avatar, size)
        a48 = resample(np.asarray(audio, np.float32), sample_rate, OUTPUT_SAMPLE_RATE)
        a48 = np.pad(a48, (0, max(0, clock.frame_start(len(keypoints)) - len(a48))))
        for i in range(0, len(keypoints), 8):
            crops = to_uint8(renderer.render(source, keypoints[i:i + 8]))
            for n, crop in enumerate(crops, start=i):
                writer.write(n, compositor.paste(crop),
                             a48[clock.frame_start(n):clock.frame_start(n + 1)])
    return out_path


__all__ = [
    "COEFFICIENTS",
    "DEFAULT_TEXT",
    "enroll_held_out",
    "evaluate_webcam",
    "held_out_portrait_path",
    "render_driven",
    "source_neutral",
]
