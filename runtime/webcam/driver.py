"""The webcam driver: tracked faces → coefficients and pose for the avatar, and the handover to
the session's own behaviour when the face is lost.

Pipeline per camera frame::

    RGB frame ──► FaceTracker (mediapipe Face Mesh, video mode) ──► 478 landmarks (pixels)
              ──► Retargeter, FAST preset (bounded least squares on a rig of the *driver's*
                  neutral, ``avatars.retarget``) ──► ARKit coefficients [19] + head pose [6]
              ──► One Euro smoothing ──► mapped onto the avatar's rig
              ──► blend with the session's own behaviour output (audio mouth, idle head) ──► rig

* **Calibration**: the first ``DriverParams.calibration_frames`` found faces make the driver's
  neutral (``runtime.webcam.tracker.NeutralCalibration``); ``WebcamDriver.calibrate`` sets a
  neutral explicitly and ``WebcamDriver.recalibrate`` starts the automatic one again.
* **Retargeting**: ``avatars.retarget.Retargeter`` with the ``FAST`` preset and the ridge prior
  of ``DriverParams`` (``DriverParams.retarget_options``): on the eval's 204 tracked frames
  (2-core machine) about 6 ms per frame (p95 7–10 ms under load), at equal or better accuracy
  against the known motion than the ``ACCURATE`` preset (17 ms cold, 7.5 ms warm-started on
  rig-made landmarks, ``facecast bench rig``), whose unregularised fit spreads tracker noise
  over look-alike coefficients.
* **Mapping onto the avatar** (``WebcamDriver.map_to``): the coefficients and the angles and
  scale of the pose transfer as they are (both are relative to a neutral); translations are
  fitted in driver IODs and applied in avatar IODs (one eye distance of head motion moves the
  avatar by one of its eye distances); mouthClose is re-solved on the avatar so its inner-lip gap
  (in IODs, ``avatars.rig.expression_lip_gap``) equals the driver's, because mouthClose closes
  the gap of each face's *own* neutral (a user calibrated with closed lips and a portrait with
  parted lips need different values).
* **Handover** (``DriveBlend``): while the face is tracked the webcam drives everything. When it
  is lost, the last tracked values are held for ``hold_s``, then the expression cross-fades to the
  session's own coefficients (the motion model's audio-driven mouth, with the behaviour layer's
  blinks and brows) over ``expression_release_s`` and the head eases back to the behaviour's idle
  motion over ``pose_release_s``; when the face returns, the webcam takes over again over
  ``attack_s``. Every weight is passed through a smoothstep, so nothing jumps.
* **Live** (``LiveWebcamDrive``): source → tracking in a thread; the per-frame override that a
  live ``runtime.live.session.Session`` consults (``Session.drive``): ``facecast cam --drive
  webcam`` (``open_webcam_drive``).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from avatars import topology as T
from avatars.bundle import inter_ocular_distance
from avatars.retarget import FAST, Retargeter, RetargetOptions, RetargetResult
from avatars.rig import (
    INDEX,
    N_COEFFICIENTS,
    Rig,
    closure_for_gap,
    expression_lip_gap,
    smoothstep,
)
from runtime.animation.one_euro import OneEuroFilter, OneEuroParams
from runtime.webcam.source import VideoSource
from runtime.webcam.tracker import FaceTracker, NeutralCalibration

DEFAULT_CROP_PER_IOD = 4.79
"""Render-crop side in inter-ocular distances of the default avatar (202 px crop / 42.2 px IOD,
``avatars/default/avatar.json``); used to scale translations when no target rig is given."""

EXPRESSION_SMOOTHING = OneEuroParams(min_cutoff=4.0, beta=4.0, d_cutoff=5.0)
"""One Euro parameters for webcam coefficients in [0, 1]: close to the behaviour layer's
(``runtime.animation.behaviour.COEFFICIENT_SMOOTHING``, tuned so a 4 Hz jaw keeps its amplitude)."""
POSE_SMOOTHING = OneEuroParams(min_cutoff=2.0, beta=5.0, d_cutoff=1.0)
"""One Euro parameters for the webcam head pose (radians and frame fractions), as the behaviour
layer's (``runtime.animation.behaviour.POSE_SMOOTHING``): 2 Hz at rest removes tracker jitter."""


@dataclass(frozen=True)
class DriverParams:
    """Tuning of ``WebcamDriver`` (seconds, pixels, IODs).

    Attributes:
        calibration_frames: face-found frames whose per-point median is the driver's neutral.
        min_iod_px: smallest face accepted (inter-ocular distance in frame pixels); smaller
            faces are too coarse for expressions and count as lost.
        max_rms_iod: largest fit residual (driver IODs) accepted; a worse fit (a false track, a
            face far outside the rig's range) counts as lost. A good track fits to about 0.01.
        hold_s: how long the last tracked values are held before the handover starts (covers
            single-frame dropouts without any motion).
        expression_release_s: cross-fade of the expression to the session's (audio) mouth.
        pose_release_s: ease of the head back to the behaviour's idle motion.
        attack_s: cross-fade back to the webcam when the face returns.
        smooth: One Euro smoothing of the webcam coefficients and pose.
        translation_gain: multiplies the head translation passed to the avatar.
        prior_weight, nuisance_prior_weight: ridge prior of the fit
            (``avatars.retarget.RetargetOptions``), in residual units (driver IODs) per unit of
            coefficient; the second for ``avatars.retarget.NUISANCE_PREFIXES``.
        neutral_lips_closed: the driver's neutral is a relaxed face with closed lips (what the
            calibration asks of a user): its measured lip gap is then an offset of the tracker
            and is subtracted before the gap is transferred (``WebcamDriver.map_to``). False
            for a neutral whose lips are parted (a portrait photo).
    """

    calibration_frames: int = 5
    min_iod_px: float = 16.0
    max_rms_iod: float = 0.08
    hold_s: float = 0.12
    expression_release_s: float = 0.2
    pose_release_s: float = 0.6
    attack_s: float = 0.2
    smooth: bool = True
    translation_gain: float = 1.0
    prior_weight: float = 0.05
    nuisance_prior_weight: float = 0.2
    neutral_lips_closed: bool = True

    def retarget_options(self) -> RetargetOptions:
        """The fit's options: ``avatars.retarget.FAST`` with this ridge prior."""
        return FAST.with_prior(self.prior_weight, self.nuisance_prior_weight)


@dataclass(frozen=True)
class Observation:
    """What one camera frame yielded once tracked and fitted, mapped onto the avatar.

    Attributes:
        time: the frame's time, seconds.
        coeffs: float64 [19] in [0, 1] (smoothed); pose: float64 [6] for the avatar's rig
            (radians; tx, ty fractions of the avatar crop; scale), smoothed.
        fit: the raw ``avatars.retarget.RetargetResult`` in driver terms (before smoothing
            and mapping).
        landmarks: float64 [478, 3] tracked landmarks in frame pixels.
        track_seconds: mediapipe's wall time on the frame.
        driver_coeffs, driver_pose: the smoothed fit in driver terms (pose tx, ty in driver
            IODs), before ``WebcamDriver.map_to``.
    """

    time: float
    coeffs: np.ndarray
    pose: np.ndarray
    fit: RetargetResult
    landmarks: np.ndarray
    track_seconds: float
    driver_coeffs: np.ndarray
    driver_pose: np.ndarray


@dataclass
class DriveFrame:
    """One output frame of the driver: ``coeffs`` float64 [19] in [0, 1], ``pose`` float64 [6]
    (``avatars.rig.POSE_NAMES``) for the avatar's rig; ``tracked`` when this frame's face was
    found and used; ``weight`` the webcam's share of the expression (1 = all webcam, 0 = all
    audio) and ``pose_weight`` of the pose; ``calibrating`` while the neutral is being taken."""

    coeffs: np.ndarray
    pose: np.ndarray
    tracked: bool
    weight: float
    pose_weight: float
    calibrating: bool = False


@dataclass
class DriveBlend:
    """The handover between webcam and session (audio mouth, idle head), stepped per output frame.

    Cheap and thread-confined: a live session calls ``step`` from its own frame clock.
    See ``DriverParams`` for the timing.
    """

    params: DriverParams = field(default_factory=DriverParams)
    expression_w: float = 0.0
    pose_w: float = 0.0
    lost_s: float = math.inf
    last: Observation | None = None

    def step(self, obs: Observation | None, fallback_coeffs: np.ndarray,
             fallback_pose: np.ndarray, dt: float) -> DriveFrame:
        """Blend for one output frame.

        Args:
            obs: this frame's observation, or None when the face is not tracked now.
            fallback_coeffs: float [19], the session's own coefficients (audio-driven mouth,
                blinks, brows). fallback_pose: float [6], its idle head pose.
            dt: seconds since the previous call (> 0).
        """
        p = self.params
        fc = np.asarray(fallback_coeffs, dtype=np.float64)
        fp = np.asarray(fallback_pose, dtype=np.float64)
        if fc.shape != (N_COEFFICIENTS,) or fp.shape != (6,):
            raise ValueError(f"fallback must be coeffs [{N_COEFFICIENTS}] and pose [6], got "
                             f"{list(fc.shape)} and {list(fp.shape)}")
        if obs is not None:
            self.last = obs
            self.lost_s = 0.0
            self.expression_w = min(1.0, self.expression_w + dt / p.attack_s)
            self.pose_w = min(1.0, self.pose_w + dt / p.attack_s)
        else:
            self.lost_s += dt
            if self.lost_s > p.hold_s:
                self.expression_w = max(0.0, self.expression_w - dt / p.expression_release_s)
                self.pose_w = max(0.0, self.pose_w - dt / p.pose_release_s)
        a = float(smoothstep(0.0, 1.0, self.expression_w))
        b = float(smoothstep(0.0, 1.0, self.pose_w))
        if self.last is None or (a == 0.0 and b == 0.0):
            return DriveFrame(fc.copy(), fp.copy(), obs is not None, a, b)
        coeffs = np.clip(a * self.last.coeffs + (1.0 - a) * fc, 0.0, 1.0)
        pose = b * self.last.pose + (1.0 - b) * fp
        return DriveFrame(coeffs, pose, obs is not None, a, b)


class WebcamDriver:
    """Face tracking, calibration, retargeting and smoothing of a driver's video frames.

    Args:
        target_rig: the avatar's rig (``avatars.rig.Rig.for_avatar`` at the renderer's size):
            ``map_to`` scales translations by its IOD and solves mouthClose on it. None:
            ``DEFAULT_CROP_PER_IOD`` and no lip-gap transfer.
        fps: output frame rate, for ``step`` when no time is given.
        params: ``DriverParams``.
        tracker: a ``FaceTracker`` (default: a new one; mediapipe is imported on construction).

    Two halves, so a live session can run them in different threads:

    * ``observe(rgb, t) -> Observation | None``: mediapipe + calibration + fit + smoothing
      (the heavy half: a few ms of mediapipe and the fit per frame);
    * ``blend.step(obs, fallback_coeffs, fallback_pose, dt) -> DriveFrame`` (``DriveBlend``).

    ``step(rgb, fallback_coeffs, fallback_pose)`` does both for one frame (files, tests, eval).
    ``stats`` counts frames, faces found, frames driven and the time spent.
    """

    def __init__(self, target_rig: Rig | None = None, fps: float = 25.0,
                 params: DriverParams = DriverParams(), tracker: FaceTracker | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.params = params
        self.fps = float(fps)
        self.target_rig = target_rig
        self.tracker = tracker or FaceTracker()
        self.blend = DriveBlend(params)
        self.retargeter: Retargeter | None = None
        self.neutral: np.ndarray | None = None
        self.neutral_lip_gap = 0.0
        """The calibrated neutral's inner-lip gap in driver IODs, subtracted from every measured
        gap when ``params.neutral_lips_closed`` (else 0)."""
        self._calibration = NeutralCalibration(params.calibration_frames)
        self._coeff_filter = OneEuroFilter(EXPRESSION_SMOOTHING)
        self._pose_filter = OneEuroFilter(POSE_SMOOTHING)
        self._was_tracked = False
        self._frame = 0
        self._last_t: float | None = None
        self.stats = {"frames": 0, "faces": 0, "observations": 0, "rejected": 0,
                      "track_s": 0.0, "fit_s": 0.0}

    # --- calibration ----------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        """True once the driver has a neutral face."""
        return self.retargeter is not None

    def calibrate(self, neutral: np.ndarray) -> None:
        """Use ``neutral`` (float [478, 3] frame pixels, z in x's scale) as the driver's neutral
        face. Raises ``ValueError`` for a wrong shape, non-finite values or a face too small."""
        lm = np.asarray(neutral, dtype=np.float64)
        if lm.shape != (T.N_LANDMARKS, 3) or not np.isfinite(lm).all():
            raise ValueError(f"neutral must be finite [478, 3], got {list(lm.shape)}")
        iod = inter_ocular_distance(lm)
        if iod < self.params.min_iod_px:
            raise ValueError(f"neutral face too small: IOD {iod:.1f} px < "
                             f"{self.params.min_iod_px:g}")
        self.neutral = lm
        self.retargeter = Retargeter(lm, iod, self.params.retarget_options())
        rest = np.zeros(N_COEFFICIENTS)
        self.neutral_lip_gap = (float(expression_lip_gap(self.retargeter.rig, rest))
                                if self.params.neutral_lips_closed else 0.0)
        self._calibration.reset()
        self._coeff_filter.reset()
        self._pose_filter.reset()

    def recalibrate(self) -> None:
        """Forget the neutral: the next ``calibration_frames`` found faces make a new one."""
        self.retargeter = None
        self.neutral = None
        self._calibration.reset()

    # --- the heavy half -------------------------------------------------------------------
    def observe(self, rgb: np.ndarray, t: float) -> Observation | None:
        """Track and fit one frame taken at ``t`` seconds (increasing).

        Returns the ``Observation`` mapped onto the avatar, or None when no usable face was
        found or the neutral is still being calibrated. Raises ValueError for a frame that is
        not uint8 [H, W, 3].
        """
        self.stats["frames"] += 1
        started = time.perf_counter()
        lm = self.tracker.track(rgb)
        track_s = time.perf_counter() - started
        self.stats["track_s"] += track_s
        if lm is None or inter_ocular_distance(lm) < self.params.min_iod_px:
            self._lost()
            return None
        self.stats["faces"] += 1
        if self.retargeter is None:
            neutral = self._calibration.add(lm)
            if neutral is not None:
                self.calibrate(neutral)
            return None
        if not self._was_tracked:
            self.retargeter.reset()
            self._coeff_filter.reset()
            self._pose_filter.reset()
        fit = self.retargeter.fit(lm, warm_start=self._was_tracked)
        self.stats["fit_s"] += fit.seconds
        if fit.rms_iod > self.params.max_rms_iod:
            self.stats["rejected"] += 1
            self._lost()
            return None
        self._was_tracked = True
        self.stats["observations"] += 1
        c, pz = fit.coeffs, fit.pose
        if self.params.smooth:
            c = np.clip(self._coeff_filter(c, t), 0.0, 1.0)
            pz = self._pose_filter(pz, t)
        coeffs, pose = self.map_to(c, pz, self.target_rig)
        return Observation(t, coeffs, pose, fit, lm, track_s, c, pz)

    def _lost(self) -> None:
        self._was_tracked = False

    def map_to(self, coeffs: np.ndarray, pose: np.ndarray, rig: Rig | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Driver-space coefficients [19] and pose [6] (tx, ty in driver IODs) → the input of
        ``rig`` (an avatar's rig; None: ``DEFAULT_CROP_PER_IOD`` and no lip transfer).

        * angles and scale: as they are (both are relative to a neutral);
        * tx, ty: × ``rig.iod / rig.size`` (one driver IOD of motion → one avatar IOD) ×
          ``translation_gain``;
        * mouthClose: re-solved on the avatar so that its central inner-lip gap in IODs equals
          the driver's (``avatars.rig.expression_lip_gap`` / ``closure_for_gap``), less the driver neutral's own
          gap when ``DriverParams.neutral_lips_closed``. mouthClose closes the gap that
          a face's *own* neutral has: a driver calibrated with closed lips and an avatar photo
          with parted lips need different values for the same look.

        Returns (float64 [19] in [0, 1], float64 [6]). Requires a calibrated driver.
        """
        if self.retargeter is None:
            raise RuntimeError("the driver is not calibrated yet")
        c = np.clip(np.asarray(coeffs, dtype=np.float64), 0.0, 1.0).copy()
        out = np.array(pose, dtype=np.float64)
        per_iod = rig.iod / rig.size if rig is not None else 1.0 / DEFAULT_CROP_PER_IOD
        out[3:5] *= per_iod * self.params.translation_gain
        if rig is not None:
            gap = expression_lip_gap(self.retargeter.rig, c) - self.neutral_lip_gap
            c[INDEX["mouthClose"]] = closure_for_gap(rig, c, gap)
        return c, out

    # --- both halves ----------------------------------------------------------------------
    def step(self, rgb: np.ndarray, fallback_coeffs: np.ndarray, fallback_pose: np.ndarray,
             t: float | None = None) -> DriveFrame:
        """One output frame from one camera frame.

        Args:
            rgb: uint8 [H, W, 3] RGB frame.
            fallback_coeffs: float [19], what the session would show without the webcam (the
                motion model's audio mouth with the behaviour's blinks and brows).
            fallback_pose: float [6], the behaviour's idle head pose.
            t: the frame's time in seconds (default: frame count / fps).

        Returns a ``DriveFrame`` (``coeffs`` [19], ``pose`` [6], ``tracked``).
        """
        t = self._frame / self.fps if t is None else float(t)
        dt = 1.0 / self.fps if self._last_t is None else max(t - self._last_t, 1e-6)
        self._last_t = t
        self._frame += 1
        obs = self.observe(rgb, t)
        out = self.blend.step(obs, fallback_coeffs, fallback_pose, dt)
        out.calibrating = not self.calibrated
        return out

    def close(self) -> None:
        """Free mediapipe's graph."""
        self.tracker.close()


# --------------------------------------------------------------------------------------------
# live: the session hook
# --------------------------------------------------------------------------------------------
class LiveWebcamDrive:
    """Camera → tracking in a background thread; the per-frame override of a live session.

    Args:
        source: a ``VideoSource`` (camera, or a file with ``realtime=True``).
        driver: a ``WebcamDriver`` (give it the session avatar's rig as ``target_rig``).
        fps: the session's frame rate (the blend's time step).
        stale_s: an observation older than this counts as "face lost" (a camera that stalls).

    Use::

        drive = LiveWebcamDrive(VideoSource(0), WebcamDriver(state.rig, fps=25), fps=25).start()
        session.drive = drive          # Session.advance calls drive(coeffs, pose) every frame
        ...
        drive.close()

    ``__call__(coeffs, pose) -> (coeffs, pose)`` takes the behaviour layer's output for the
    frame (float [19], float [6]) and returns what the rig should show. It never blocks on the
    camera. ``last`` is the last ``DriveFrame``; ``error`` holds the exception that stopped the
    capture thread (e.g. ``CameraError`` when a camera is unplugged), after which the session
    falls back to its own behaviour. ``frames_tracked`` / ``frames_output`` count the output.
    """

    def __init__(self, source: VideoSource, driver: WebcamDriver, fps: float = 25.0,
                 stale_s: float = 0.25) -> None:
        self.source = source
        self.driver = driver
        self.dt = 1.0 / float(fps)
        self.stale_s = stale_s
        self.error: BaseException | None = None
        self.last: DriveFrame | None = None
        self.frames_output = 0
        self.frames_tracked = 0
        self._obs: Observation | None = None
        self._obs_at = -math.inf
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LiveWebcamDrive:
        """Start the capture thread; returns self."""
        self._thread = threading.Thread(target=self._run, name="facecast-webcam", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    return
                obs = self.driver.observe(frame.rgb, frame.time)
                with self._lock:
                    self._obs = obs
                    self._obs_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - kept for the caller; the session goes on
            self.error = exc

    def __call__(self, coeffs: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            obs = self._obs if time.monotonic() - self._obs_at <= self.stale_s else None
        out = self.driver.blend.step(obs, coeffs, pose, self.dt)
        out.calibrating = not self.driver.calibrated
        self.last = out
        self.frames_output += 1
        self.frames_tracked += int(out.tracked)
        return out.coeffs, out.pose

    def close(self) -> None:
        """Stop the thread, release the source and mediapipe (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.source.close()
        self.driver.close()


def open_webcam_drive(source: int | str | os.PathLike, avatar, size: int = 256,
                      fps: int = 25, params: DriverParams = DriverParams(),
                      width: int | None = None, height: int | None = None,
                      realtime: bool = True) -> LiveWebcamDrive:
    """Everything ``facecast cam --drive webcam`` needs, started: ``VideoSource(source)`` →
    ``WebcamDriver`` for ``avatar``'s rig at the renderer's ``size`` → ``LiveWebcamDrive``.

    Pass the result as ``Session(drive=...)`` (``runtime.local.cam.run_cam(options, drive=...)``) and
    ``close()`` it after the session ends. ``source`` is a camera index/device or a video file
    (played in real time when ``realtime``; it stops at its end and the session falls back to
    its own behaviour). Raises as ``VideoSource`` (``CameraError``, ``FileNotFoundError``,
    ``ValueError``) before anything is started; mediapipe is imported here.
    """
    video = VideoSource(source, width=width, height=height, fps=fps, realtime=realtime)
    try:
        driver = WebcamDriver(Rig.for_avatar(avatar, size), fps=fps, params=params)
    except BaseException:
        video.close()
        raise
    return LiveWebcamDrive(video, driver, fps=fps).start()
