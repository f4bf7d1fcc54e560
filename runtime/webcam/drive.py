"""Webcam-driven mode: the user's tracked face drives the avatar; the voice takes over when lost.

Pipeline per camera frame::

    RGB frame ──► mediapipe Face Mesh (legacy, video mode) ──► 478 landmarks (pixels)
              ──► FastRetargeter (bounded least squares on a rig of the *driver's* neutral)
              ──► ARKit coefficients [19] + head pose [6] ──► One Euro smoothing
              ──► blend with the session's own behaviour output (audio mouth, idle head) ──► rig

* **Tracking**: mediapipe 0.10.21's legacy Face Mesh (``mp.solutions.face_mesh``) in video mode
  (``static_image_mode=False``: detection once, then landmark tracking from the previous frame's
  face), ``refine_landmarks=True`` (478 points with irises), one face. Its landmarks are
  normalised; they are turned into pixels of the frame (z scaled by the frame width, as
  mediapipe's z is; the convention of ``avatars.enroll.detect_faces``).
* **Calibration** (the driver's neutral): the per-point median of the first
  ``DriverParams.calibration_frames`` frames in which a face is found (5 frames, 0.2 s at 25 fps),
  so a blink or a twitch in one of them does not bend the neutral. The user is expected to look
  at the camera with a relaxed, closed mouth for that moment (as with every face-capture app's
  "neutral pose" step); ``WebcamDriver.calibrate`` sets a neutral explicitly and
  ``WebcamDriver.recalibrate`` starts the automatic one again.
* **Retargeting**: ``FastRetargeter`` solves the problem of ``avatars.retarget.Retargeter``
  (minimise Σ‖rig(c, pose)_i − observed_i‖² over c ∈ [0, 1]^19 and the pose, SciPy's bounded
  ``least_squares`` with method ``trf``) with four changes for real time: (1) only
  ``FIT_POINTS`` (lip contours, eyelids, brows, face oval, nose ridge: 138 of the 468 mesh
  points); (2) the rig's einsums as BLAS matrix products and an exact Jacobian for the 19
  coefficients (finite differences only for the 6 pose parameters); (3) warm start from the
  previous frame and at most 8 evaluations with tolerances 1e-6 (mediapipe's own landmark noise
  is about 0.01 IOD); (4) a ridge prior on the coefficients (``NUISANCE_PREFIXES``), which the
  tracked landmarks need (without it one motion spreads over look-alike coefficients). On the
  eval's 204 tracked frames (2-core machine under load): about 6 ms per frame (p95 10 ms)
  against 42 ms median / 160 ms p95 for ``Retargeter`` (single-threaded OpenBLAS; with
  OpenBLAS's default threads on a busy machine its 468-point products took 160 ms median), at
  equal or better accuracy against the known motion.
* **Mapping onto the avatar** (``WebcamDriver.map_to``): the coefficients and the angles and
  scale of the pose transfer as they are (both are relative to a neutral); translations are
  fitted in driver IODs and applied in avatar IODs (one eye distance of head motion moves the
  avatar by one of its eye distances); mouthClose is re-solved on the avatar so its inner-lip gap
  (in IODs) equals the driver's, because mouthClose closes the gap of each face's *own* neutral
  (a user calibrated with closed lips and a portrait with parted lips need different values).
* **Handover** (``DriveBlend``): while the face is tracked the webcam drives everything. When it
  is lost, the last tracked values are held for ``hold_s``, then the expression cross-fades to the
  session's own coefficients (the motion model's audio-driven mouth, with the behaviour layer's
  blinks and brows) over ``expression_release_s`` and the head eases back to the behaviour's idle
  motion over ``pose_release_s``; when the face returns, the webcam takes over again over
  ``attack_s``. Every weight is passed through a smoothstep, so nothing jumps.

``VideoSource`` reads frames from a camera (OpenCV, V4L2 on Linux) or from a video file (PyAV).
``LiveWebcamDrive`` runs source → tracking in a thread and is the per-frame override that a live
``runtime.live.session.Session`` consults (``Session.drive``): ``facecast cam --drive webcam``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatars import topology as T
from avatars.rig import INDEX, N_COEFFICIENTS, NEUTRAL_POSE, Rig
from runtime.animation.one_euro import OneEuroFilter, OneEuroParams

DEFAULT_CROP_PER_IOD = 4.79
"""Render-crop side in inter-ocular distances of the default avatar (202 px crop / 42.2 px IOD,
``avatars/default/avatar.json``); used to scale translations when no target rig is given."""

_NOSE_RIDGE = (168, 6, 197, 195, 5, 4, 1, 2, 98, 327)
"""Face Mesh vertices down the nose ridge to the tip and the alae: rigid under expression, they
pin the head pose."""


def _fit_points() -> np.ndarray:
    groups = (T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER, T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER,
              T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER, T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER,
              T.RIGHT_BROW_UPPER, T.RIGHT_BROW_LOWER, T.LEFT_BROW_UPPER, T.LEFT_BROW_LOWER,
              T.FACE_OVAL, _NOSE_RIDGE)
    return np.array(sorted({i for g in groups for i in g}), dtype=np.int64)


FIT_POINTS = _fit_points()
"""Mesh vertices the fast fit uses: every vertex each rig field is authored on (lip contours,
eyelids, brows; ``avatars.rig``) plus the face oval and nose ridge for the head pose."""

NUISANCE_PREFIXES = ("mouthPress", "mouthUpperUp", "mouthLowerDown", "mouthStretch",
                     "mouthFunnel", "mouthPucker", "browOuterUp")
"""Coefficients the fit's prior holds back harder: each can mimic part of another's motion
(press ≈ close, lower-down/upper-up ≈ jaw and closure, stretch ≈ smile, funnel/pucker ≈ lip
rounding, outer brows ≈ inner brow), and on tracked landmarks the unregularised fit spreads
one motion over several of them (``facecast eval webcam``: coefficient MAE 0.12 → 0.05)."""

_ANGLE_LIMIT = np.pi / 2
_LOWER = np.concatenate([np.zeros(N_COEFFICIENTS), [-_ANGLE_LIMIT] * 3, [-2.0, -2.0, 0.2]])
_UPPER = np.concatenate([np.ones(N_COEFFICIENTS), [_ANGLE_LIMIT] * 3, [2.0, 2.0, 5.0]])
_STEP = 1e-6
_START = np.concatenate([np.zeros(N_COEFFICIENTS), NEUTRAL_POSE])


class CameraError(OSError):
    """A camera that does not exist, is busy (opened by another program) or delivers no frames."""


# --------------------------------------------------------------------------------------------
# video input
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One video frame: ``rgb`` uint8 [H, W, 3] (RGB order), ``time`` seconds (a file's
    presentation time, or seconds since a camera was opened), ``index`` from 0."""

    rgb: np.ndarray
    time: float
    index: int


def _camera_index(source: int | str | os.PathLike) -> int | None:
    """The V4L2 index a source names (``0``, ``"0"``, ``"/dev/video0"``), else None (a file)."""
    if isinstance(source, bool):
        raise TypeError("video source must be a camera index or a path, not a bool")
    if isinstance(source, int):
        return source
    s = str(source)
    if s.isdigit():
        return int(s)
    if s.startswith("/dev/video") and s[len("/dev/video"):].isdigit():
        return int(s[len("/dev/video"):])
    return None


class VideoSource:
    """Frames from a camera (OpenCV ``cv2.VideoCapture``) or a video file (PyAV).

    Args:
        source: a camera index (``0``, ``"0"``), a V4L2 device path (``"/dev/video0"``), or a
            path to any video FFmpeg decodes (MP4, WebM, MKV, …).
        width, height, fps: requested camera mode (a camera may pick the nearest it has);
            ignored for files.
        realtime: for files, deliver frames no faster than their presentation times (to feed a
            file to a live session as if it were a camera). Cameras are always real time.
        loop: for files, start again at the end instead of stopping.

    Raises:
        FileNotFoundError: a file path that does not exist.
        ValueError: a file that is not a readable video, or has no video stream.
        CameraError (an ``OSError``): no camera at that index, a camera that cannot be opened
            (busy, permission) or that delivers no frame within ``CAMERA_FIRST_FRAME_S``.

    ``read()`` returns the next ``Frame`` or None at the end of a file; iteration yields frames
    until the end. Use as a context manager or call ``close()``.
    """

    CAMERA_FIRST_FRAME_S = 5.0
    """How long a camera may take to deliver its first frame before it counts as unusable."""

    def __init__(self, source: int | str | os.PathLike, width: int | None = None,
                 height: int | None = None, fps: float | None = None, realtime: bool = False,
                 loop: bool = False) -> None:
        self.source = source
        self.realtime = realtime
        self.loop = loop
        self._index = 0
        self._cap = None
        self._container = None
        self._frames: Iterator | None = None
        self._pending: np.ndarray | None = None
        self._t0 = time.monotonic()
        self._file_offset = 0.0
        self._last_time = 0.0
        self.camera = _camera_index(source)
        if self.camera is not None:
            self._open_camera(width, height, fps)
        else:
            self.path = Path(source)
            if not self.path.exists():
                raise FileNotFoundError(f"video file not found: {self.path}")
            if self.path.is_dir():
                raise ValueError(f"video source is a folder, not a video file: {self.path}")
            self._open_file()

    @property
    def is_camera(self) -> bool:
        return self.camera is not None

    def _open_camera(self, width: int | None, height: int | None, fps: float | None) -> None:
        import cv2

        dev = Path(f"/dev/video{self.camera}")
        if os.name == "posix" and Path("/dev").is_dir() and not dev.exists():
            found = sorted(p.name for p in Path("/dev").glob("video[0-9]*"))
            listing = ", ".join(found) if found else "none"
            raise CameraError(f"no camera {self.camera}: {dev} does not exist "
                              f"(video devices here: {listing})")
        backend = cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.camera, backend)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"camera {self.camera} cannot be opened: it is busy (another "
                              "program is using it) or this user may not read it (video group)")
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
        if fps:
            cap.set(cv2.CAP_PROP_FPS, float(fps))
        deadline = time.monotonic() + self.CAMERA_FIRST_FRAME_S
        ok, bgr = cap.read()
        while not ok and time.monotonic() < deadline:
            time.sleep(0.05)
            ok, bgr = cap.read()
        if not ok or bgr is None:
            cap.release()
            raise CameraError(f"camera {self.camera} opened but delivered no frame in "
                              f"{self.CAMERA_FIRST_FRAME_S:g} s (busy, or not a capture device)")
        self._cap = cap
        self._pending = bgr
        self._t0 = time.monotonic()
        self.height, self.width = bgr.shape[:2]
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None

    def _open_file(self) -> None:
        import av

        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ValueError(f"cannot decode {self.path}: not a readable video ({why})") from None
        if not container.streams.video:
            container.close()
            raise ValueError(f"{self.path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self._container = container
        self._frames = container.decode(stream)
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._t0 = time.monotonic()

    def read(self) -> Frame | None:
        """The next frame, or None at the end of a file. Raises CameraError when a camera stops
        delivering frames (unplugged) and ValueError when a file is damaged mid-way."""
        if self._cap is not None:
            import cv2

            if self._pending is not None:
                bgr, self._pending = self._pending, None
            else:
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    raise CameraError(f"camera {self.camera} stopped delivering frames")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frame = Frame(rgb, time.monotonic() - self._t0, self._index)
            self._index += 1
            return frame
        if self._frames is None:
            return None
        import av

        try:
            vf = next(self._frames, None)
        except av.FFmpegError as exc:
            raise ValueError(f"{self.path}: decoding failed at frame {self._index}: {exc}") \
                from None
        if vf is None:
            if not self.loop or self._index == 0:
                return None
            self._file_offset = self._last_time + (1.0 / self.fps if self.fps else 0.04)
            self._container.close()
            self._open_file()
            self._t0 -= self._file_offset
            return self.read()
        t = self._file_offset + (float(vf.time) if vf.time is not None
                                 else self._index / (self.fps or 25.0))
        self._last_time = t
        if self.realtime:
            wait = t - (time.monotonic() - self._t0)
            if wait > 0:
                time.sleep(wait)
        frame = Frame(vf.to_ndarray(format="rgb24"), t, self._index)
        self._index += 1
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        """Release the camera or close the file (idempotent)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._container is not None:
            self._container.close()
            self._container = None
            self._frames = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# tracking
# --------------------------------------------------------------------------------------------
class FaceTracker:
    """mediapipe legacy Face Mesh in video mode (one face, refined: 478 points).

    Args:
        min_detection_confidence, min_tracking_confidence: mediapipe's thresholds (its
            defaults, 0.5): below the tracking one it re-runs detection; below the detection
            one it reports no face.

    ``track(rgb)`` takes uint8 [H, W, 3] RGB and returns float64 [478, 3] pixels (z scaled by
    the frame width) or None when no face is found. Frames must come in time order (the tracker
    starts from the previous frame's face). Not thread-safe; ``close()`` frees the graph.
    """

    def __init__(self, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        import mediapipe as mp

        from avatars.enroll import native_stderr_silenced

        with native_stderr_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # start the graph (its chatter)

    def track(self, rgb: np.ndarray) -> np.ndarray | None:
        img = np.asarray(rgb)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 [H, W, 3] RGB, got {img.dtype} "
                             f"{list(img.shape)}")
        h, w = img.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(img))
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        out = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64)
        out[:, 0] *= w
        out[:, 1] *= h
        out[:, 2] *= w
        return out

    def close(self) -> None:
        self._mesh.close()


# --------------------------------------------------------------------------------------------
# retargeting
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """One fitted frame: ``coeffs`` float64 [19] in [0, 1] (``avatars.rig.COEFFICIENTS``),
    ``pose`` float64 [6] (pitch, yaw, roll radians; tx, ty fractions of the retargeter's
    ``size``, which ``WebcamDriver`` sets to the driver's IOD; scale) relative to the driver's
    neutral, ``rms_iod`` the keypoint residual in driver IODs,
    ``nfev`` residual evaluations and ``seconds`` the solver's wall time."""

    coeffs: np.ndarray
    pose: np.ndarray
    rms_iod: float
    nfev: int
    seconds: float


class FastRetargeter:
    """``avatars.retarget.Retargeter``'s fit, made cheap enough for every video frame.

    Same model and solver (a rig of the driver's neutral; bounded trust-region reflective least
    squares, SciPy), but on the ``points`` subset only (default ``FIT_POINTS``: 138 vertices),
    with the rig evaluated by matrix products (``predict``, equal to ``Rig.keypoints3d``), an
    exact coefficient Jacobian (``jacobian``), warm-started from the previous frame, with
    tolerances (``xtol``/``ftol`` 1e-6, at most ``max_nfev`` evaluations) at mediapipe's landmark
    noise (about 0.01 IOD) rather than at machine precision, and an optional ridge prior: extra
    residuals ``prior_k · c_k`` (a Gaussian prior centred on the neutral, the usual
    regularisation of blendshape tracking).

    Args:
        driver_neutral: float [478, 3] pixels (z in x's scale), the driver's neutral face.
        size: pixels per unit of ``tx``, ``ty`` (a frame side; ``WebcamDriver`` passes the
            driver's IOD so translations come out in IODs).
        points: mesh vertex indices to fit (default ``FIT_POINTS``).
        max_nfev: most residual evaluations per frame (default 8).
        prior: float [19] prior weights in residual units (driver IODs) per unit of
            coefficient; None = no prior (exact recovery of rig-made landmarks).

    Raises ``ValueError`` for landmarks of the wrong shape or non-finite values.
    """

    def __init__(self, driver_neutral: np.ndarray, size: float,
                 points: np.ndarray | None = None, max_nfev: int = 8,
                 prior: np.ndarray | None = None) -> None:
        import dataclasses

        full = Rig.from_landmarks(driver_neutral, size)
        idx = FIT_POINTS if points is None else np.asarray(points, dtype=np.int64)
        self.points = idx
        self.rig = dataclasses.replace(
            full, neutral=full.neutral[idx], q0=full.q0[idx], basis=full.basis[:, idx],
            closure=full.closure[:, idx], press=full.press[:, idx])
        self.full_rig = full
        self.max_nfev = int(max_nfev)
        self.prior = (np.zeros(N_COEFFICIENTS) if prior is None
                      else np.asarray(prior, dtype=np.float64).reshape(N_COEFFICIENTS))
        self._previous = _START.copy()
        r = self.rig
        n = len(idx)
        # the rig's model (``Rig.keypoints3d``) with its einsums as BLAS matrix products
        self._basis = r.basis.reshape(N_COEFFICIENTS, n * 3)
        self._q0 = r.q0.reshape(1, n, 3)
        self._c0, self._c1 = r.closure[0][None], r.closure[1][None]
        self._press = r.press
        self._h = r.head_centre
        self._proj = r.frame.iod * r.frame.axes[:2].T  # face frame → image x, y
        self._origin = r.frame.origin[:2]

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """d keypoints / d params at x [25]: float64 [N·2, 25] (pixels per unit).

        The coefficients enter linearly through the basis and bilinearly through the lip
        closure, so their 19 columns are exact derivatives (``Rig.expression`` differentiated,
        the closure clip's derivative taken as 0 outside (0, 1)); the 6 pose columns are forward
        differences (step 1e-6) of one batched evaluation."""
        from avatars.rig import rotation_matrices

        k = N_COEFFICIENTS
        c, p = x[:k], x[k:]
        n = len(self.points)
        jaw, close = INDEX["jawOpen"], INDEX["mouthClose"]
        s_raw = (c[close] + c[INDEX["mouthPressLeft"]] * self._press[0]
                 + c[INDEX["mouthPressRight"]] * self._press[1])
        inside = ((s_raw > 0.0) & (s_raw < 1.0)).astype(np.float64)
        gap = self._c0[0] + c[jaw] * self._c1[0]  # [N, 3]
        dq = self._basis.reshape(k, n, 3).copy()
        dq[close] += inside[:, None] * gap
        dq[INDEX["mouthPressLeft"]] += (inside * self._press[0])[:, None] * gap
        dq[INDEX["mouthPressRight"]] += (inside * self._press[1])[:, None] * gap
        dq[jaw] += np.clip(s_raw, 0.0, 1.0)[:, None] * self._c1[0]
        rot = rotation_matrices(p[None, :3])[0]
        m = p[5] * rot.T @ self._proj  # [3, 2]: face-frame displacement → pixels
        jc = (dq.reshape(k * n, 3) @ m).reshape(k, n * 2)
        steps = np.where(x[k:] + _STEP <= _UPPER[k:], _STEP, -_STEP)
        batch = np.repeat(x[None], 7, axis=0)
        batch[1:, k:] += np.diag(steps)
        pred = self.predict(batch).reshape(7, -1)
        jp = (pred[1:] - pred[0]) / steps[:, None]
        return np.concatenate([jc, jp]).T

    def predict(self, params: np.ndarray) -> np.ndarray:
        """Keypoints of the fitted points: params float [B, 25] (19 coefficients, then the
        pose) → float64 [B, N, 2] driver pixels; equal to ``Rig.keypoints3d`` on those points."""
        from avatars.rig import rotation_matrices

        x = np.atleast_2d(np.asarray(params, dtype=np.float64))
        b, k = len(x), N_COEFFICIENTS
        c, p = x[:, :k], x[:, k:]
        q = self._q0 + (c @ self._basis).reshape(b, -1, 3)
        s = np.clip(c[:, INDEX["mouthClose"], None] + c[:, INDEX["mouthPressLeft"], None]
                    * self._press[0] + c[:, INDEX["mouthPressRight"], None] * self._press[1],
                    0.0, 1.0)
        q += s[:, :, None] * (self._c0 + c[:, INDEX["jawOpen"], None, None] * self._c1)
        rot = rotation_matrices(p[:, :3])
        q = self._h + p[:, 5, None, None] * ((q - self._h) @ rot.transpose(0, 2, 1))
        out = self._origin + q @ self._proj
        out += p[:, None, 3:5] * self.rig.size
        return out

    @property
    def iod(self) -> float:
        """The driver neutral's inter-ocular distance in pixels."""
        return self.rig.iod

    def reset(self) -> None:
        """Start the next fit from the neutral (after the face was lost)."""
        self._previous = _START.copy()

    def fit(self, observed: np.ndarray, warm_start: bool = True) -> Fit:
        """Fit one frame: ``observed`` [478, 2|3] tracked landmarks in driver pixels.

        Returns a ``Fit``. Raises ``ValueError`` for a wrong shape or non-finite input.
        """
        from scipy.optimize import least_squares

        obs = np.asarray(observed, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[0] != T.N_LANDMARKS or obs.shape[1] not in (2, 3):
            raise ValueError(f"observed landmarks must be [478, 2|3], got {list(obs.shape)}")
        if not np.isfinite(obs).all():
            raise ValueError("observed landmarks contain NaN or infinite values")
        target = obs[self.points, :2]
        scale = self.rig.iod
        k = N_COEFFICIENTS
        predict = self.predict

        prior = self.prior
        prior_jac = np.zeros((N_COEFFICIENTS, N_COEFFICIENTS + 6))
        prior_jac[:, :N_COEFFICIENTS] = np.diag(prior)

        def residuals(x: np.ndarray) -> np.ndarray:
            r = ((predict(x[None])[0] - target) / scale).ravel()
            return np.concatenate([r, prior * x[:N_COEFFICIENTS]])

        def jacobian(x: np.ndarray) -> np.ndarray:
            return np.concatenate([self.jacobian(x) / scale, prior_jac])

        started = time.perf_counter()
        start = np.clip(self._previous if warm_start else _START, _LOWER, _UPPER)
        sol = least_squares(residuals, start, jac=jacobian, bounds=(_LOWER, _UPPER),
                            method="trf", x_scale="jac", xtol=1e-6, ftol=1e-6, gtol=1e-8,
                            max_nfev=self.max_nfev)
        seconds = time.perf_counter() - started
        self._previous = sol.x
        rms = float(np.sqrt(np.mean(sol.fun[:-N_COEFFICIENTS].reshape(-1, 2) ** 2 * 2)))
        return Fit(sol.x[:k].copy(), sol.x[k:].copy(), rms, int(sol.nfev), seconds)


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------
def lip_gap_iod(rig: Rig, coeffs: np.ndarray) -> np.ndarray:
    """Central inner-lip gap of ``rig``'s face with coefficients [19] or [B, 19], in the rig's
    IODs, pose-free (face frame): the largest lower-minus-upper y over the pairs 82/87, 13/14,
    312/317 (``avatars.topology.CENTRAL_INNER_LIP_PAIRS``; negative when the lips overlap).
    Returns float64 [] or [B]."""
    c = np.asarray(coeffs, dtype=np.float64)
    q = rig.expression(np.atleast_2d(c))
    up = [u for u, _ in T.CENTRAL_INNER_LIP_PAIRS]
    lo = [lo for _, lo in T.CENTRAL_INNER_LIP_PAIRS]
    gap = (q[:, lo, 1] - q[:, up, 1]).max(axis=1)
    return gap if c.ndim == 2 else gap[0]


_CLOSE_GRID = np.linspace(0.0, 1.0, 21)


def closure_for_gap(rig: Rig, coeffs: np.ndarray, gap_iod: float) -> float:
    """The mouthClose in [0, 1] that gives ``rig``'s face (other coefficients as ``coeffs``
    [19]) a central inner-lip gap of ``gap_iod`` IODs: the gap is evaluated on a grid of 21
    values and inverted by linear interpolation (it falls monotonically with mouthClose; exact
    where the closure is unsaturated). A gap the face cannot reach gives 0 (wider) or 1."""
    batch = np.repeat(np.asarray(coeffs, dtype=np.float64)[None], len(_CLOSE_GRID), axis=0)
    batch[:, INDEX["mouthClose"]] = _CLOSE_GRID
    gaps = lip_gap_iod(rig, batch)  # decreasing in mouthClose
    if gap_iod >= gaps[0]:
        return 0.0
    if gap_iod <= gaps[-1]:
        return 1.0
    return float(np.interp(-gap_iod, -gaps, _CLOSE_GRID))


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
        prior_weight, nuisance_prior_weight: ridge prior of the fit (``FastRetargeter``), in
            residual units (driver IODs) per unit of coefficient; the second for
            ``NUISANCE_PREFIXES``.
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

    def prior_weights(self) -> np.ndarray:
        """Per-coefficient weights [19] of the fit's ridge prior (``FastRetargeter``)."""
        w = np.full(N_COEFFICIENTS, self.prior_weight)
        for name, i in INDEX.items():
            if name.startswith(NUISANCE_PREFIXES):
                w[i] = self.nuisance_prior_weight
        return w


@dataclass(frozen=True)
class Observation:
    """What one camera frame yielded once tracked and fitted, mapped onto the avatar.

    Attributes:
        time: the frame's time, seconds.
        coeffs: float64 [19] in [0, 1] (smoothed); pose: float64 [6] for the avatar's rig
            (radians; tx, ty fractions of the avatar crop; scale), smoothed.
        fit: the raw ``Fit`` in driver terms (before smoothing and mapping).
        landmarks: float64 [478, 3] tracked landmarks in frame pixels.
        track_seconds: mediapipe's wall time on the frame.
        driver_coeffs, driver_pose: the smoothed fit in driver terms (pose tx, ty in driver
            IODs), before ``WebcamDriver.map_to``.
    """

    time: float
    coeffs: np.ndarray
    pose: np.ndarray
    fit: Fit
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


def _smoothstep(w: float) -> float:
    w = min(max(w, 0.0), 1.0)
    return w * w * (3.0 - 2.0 * w)


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
        a, b = _smoothstep(self.expression_w), _smoothstep(self.pose_w)
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
        self.retargeter: FastRetargeter | None = None
        self.neutral: np.ndarray | None = None
        self.neutral_lip_gap = 0.0
        """The calibrated neutral's inner-lip gap in driver IODs, subtracted from every measured
        gap when ``params.neutral_lips_closed`` (else 0)."""
        self._calibration: list[np.ndarray] = []
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
        return self.retargeter is not None

    def calibrate(self, neutral: np.ndarray) -> None:
        """Use ``neutral`` (float [478, 3] frame pixels, z in x's scale) as the driver's neutral
        face. Raises ``ValueError`` for a wrong shape, non-finite values or a face too small."""
        from avatars.bundle import inter_ocular_distance

        lm = np.asarray(neutral, dtype=np.float64)
        if lm.shape != (T.N_LANDMARKS, 3) or not np.isfinite(lm).all():
            raise ValueError(f"neutral must be finite [478, 3], got {list(lm.shape)}")
        iod = inter_ocular_distance(lm)
        if iod < self.params.min_iod_px:
            raise ValueError(f"neutral face too small: IOD {iod:.1f} px < "
                             f"{self.params.min_iod_px:g}")
        self.neutral = lm
        self.retargeter = FastRetargeter(lm, iod, prior=self.params.prior_weights())
        rest = np.zeros(N_COEFFICIENTS)
        self.neutral_lip_gap = (float(lip_gap_iod(self.retargeter.full_rig, rest))
                             if self.params.neutral_lips_closed else 0.0)
        self._calibration = []
        self._coeff_filter.reset()
        self._pose_filter.reset()

    def recalibrate(self) -> None:
        """Forget the neutral: the next ``calibration_frames`` found faces make a new one."""
        self.retargeter = None
        self.neutral = None
        self._calibration = []

    # --- the heavy half -------------------------------------------------------------------
    def observe(self, rgb: np.ndarray, t: float) -> Observation | None:
        """Track and fit one frame taken at ``t`` seconds (increasing).

        Returns the ``Observation`` mapped onto the avatar, or None when no usable face was
        found or the neutral is still being calibrated. Raises ValueError for a frame that is
        not uint8 [H, W, 3].
        """
        from avatars.bundle import inter_ocular_distance

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
            self._calibration.append(lm)
            if len(self._calibration) >= self.params.calibration_frames:
                self.calibrate(np.median(np.stack(self._calibration), axis=0))
            return None
        assert self.retargeter is not None
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
          the driver's (``lip_gap_iod`` / ``closure_for_gap``), less the driver neutral's own
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
            gap = lip_gap_iod(self.retargeter.full_rig, c) - self.neutral_lip_gap
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


__all__ = ["open_webcam_drive", "CameraError", "DriveBlend", "DriveFrame", "DriverParams", "FIT_POINTS",
           "FaceTracker", "FastRetargeter", "Fit", "Frame", "LiveWebcamDrive",
           "NUISANCE_PREFIXES", "Observation", "VideoSource", "WebcamDriver", "closure_for_gap",
           "lip_gap_iod"]
