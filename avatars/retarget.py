"""Retargeting: a driver face's landmarks → head pose and ARKit coefficients, by least squares.

Given the driver's neutral landmarks (one calibration frame, [478, 3]) and a tracked frame of
the same driver ([478, 2] or [478, 3], same pixel frame), fit the parameters of a rig built on
the driver's neutral so that its projected keypoints match the tracked ones:

    minimise  Σ_i ‖ rig(c, pose)_i − observed_i ‖² / IOD²  +  Σ_k (w_k · c_k)²
    over c ∈ [0, 1]^K and the head pose,

over a set of Face Mesh vertices. The solver is SciPy's bounded trust-region reflective least
squares (``scipy.optimize.least_squares``, method ``trf``). The rig is evaluated by matrix
products equal to ``Rig.keypoints3d`` on the fitted vertices; the coefficients enter it linearly
(and bilinearly through the lip closure), so their Jacobian columns are exact, and the six pose
columns are forward differences of one batched evaluation. The coefficients and pose then drive
any other avatar's rig: any face drives any avatar.

One retargeter, two presets (``RetargetOptions``):

* ``ACCURATE`` (the default): all 468 mesh points (the iris points move with gaze, which the rig
  does not model), tolerances near machine precision, up to 200 evaluations, no prior: exact
  recovery of rig-made landmarks (enrollment checks, ``facecast bench rig``).
* ``FAST``: ``FIT_POINTS`` only (lip contours, eyelids, brows, face oval, nose ridge: 138
  vertices), tolerances at mediapipe's landmark noise (about 0.01 IOD) and at most 8 evaluations
  warm-started from the previous video frame, so it keeps up with a webcam (a few ms a frame).
  A tracked face also needs the ridge prior ``w_k`` (``RetargetOptions.prior_weight``,
  ``nuisance_prior_weight``, ``NUISANCE_PREFIXES``), a Gaussian prior centred on the neutral,
  the usual regularisation of blendshape tracking: without it one motion spreads over
  look-alike coefficients. ``runtime.webcam.driver.DriverParams`` sets it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from avatars import topology as T
from avatars.rig import (
    COEFFICIENTS,
    INDEX,
    N_COEFFICIENTS,
    NEUTRAL_POSE,
    Rig,
    rotation_matrices,
)

N_PARAMS = N_COEFFICIENTS + 6
"""Length of the fitted parameter vector: the coefficients (``COEFFICIENTS`` order), then the
pose (``avatars.rig.POSE_NAMES``)."""

ANGLE_LIMIT = np.pi / 2
"""Bound on |pitch|, |yaw|, |roll|, radians."""
LOWER = np.concatenate([np.zeros(N_COEFFICIENTS), [-ANGLE_LIMIT] * 3, [-2.0, -2.0, 0.2]])
"""Lower bounds of the parameters [K + 6]: coefficients 0, angles −π/2, tx/ty −2, scale 0.2."""
UPPER = np.concatenate([np.ones(N_COEFFICIENTS), [ANGLE_LIMIT] * 3, [2.0, 2.0, 5.0]])
"""Upper bounds of the parameters [K + 6]: coefficients 1, angles π/2, tx/ty 2, scale 5."""
START = np.concatenate([np.zeros(N_COEFFICIENTS), NEUTRAL_POSE])
"""Where a cold fit starts: the neutral face in the neutral pose."""
POSE_STEP = 1e-6
"""Forward-difference step of the pose columns of the Jacobian (radians, fractions, factor)."""

NOSE_RIDGE = (168, 6, 197, 195, 5, 4, 1, 2, 98, 327)
"""Face Mesh vertices down the nose ridge to the tip and the alae: rigid under expression, they
pin the head pose."""


def _fit_points() -> tuple[int, ...]:
    groups = (T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER, T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER,
              T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER, T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER,
              T.RIGHT_BROW_UPPER, T.RIGHT_BROW_LOWER, T.LEFT_BROW_UPPER, T.LEFT_BROW_LOWER,
              T.FACE_OVAL, NOSE_RIDGE)
    return tuple(sorted({i for g in groups for i in g}))


FIT_POINTS = _fit_points()
"""Mesh vertices the ``FAST`` preset fits (138): every vertex each rig field is authored on (lip
contours, eyelids, brows; ``avatars.rig``) plus the face oval and nose ridge for the head pose."""
MESH_POINTS = tuple(range(T.N_MESH))
"""Mesh vertices the ``ACCURATE`` preset fits: all 468 (not the iris points)."""

NUISANCE_PREFIXES = ("mouthPress", "mouthUpperUp", "mouthLowerDown", "mouthStretch",
                     "mouthFunnel", "mouthPucker", "browOuterUp")
"""Coefficients the prior holds back harder (``RetargetOptions.nuisance_prior_weight``): each
can mimic part of another's motion (press ≈ close, lower-down/upper-up ≈ jaw and closure,
stretch ≈ smile, funnel/pucker ≈ lip rounding, outer brows ≈ inner brow), and on tracked
landmarks the unregularised fit spreads one motion over several of them (``facecast eval
webcam``: coefficient MAE 0.12 → 0.05)."""


@dataclass(frozen=True)
class RetargetOptions:
    """How a ``Retargeter`` fits: which vertices, how precisely, with which prior.

    Attributes:
        points: Face Mesh vertex indices fitted (``MESH_POINTS`` or ``FIT_POINTS``).
        xtol, ftol, gtol: ``scipy.optimize.least_squares`` tolerances.
        max_nfev: most residual evaluations per frame.
        prior_weight: ridge prior weight of every coefficient, in residual units (driver IODs)
            per unit of coefficient; 0 = none (exact recovery of rig-made landmarks).
        nuisance_prior_weight: the same for the coefficients of ``NUISANCE_PREFIXES`` (in
            place of ``prior_weight``).
    """

    points: tuple[int, ...]
    xtol: float
    ftol: float
    gtol: float
    max_nfev: int
    prior_weight: float = 0.0
    nuisance_prior_weight: float = 0.0

    def prior(self) -> np.ndarray:
        """Per-coefficient prior weights, float64 [K] (``COEFFICIENTS`` order)."""
        w = np.full(N_COEFFICIENTS, float(self.prior_weight))
        for name, i in INDEX.items():
            if name.startswith(NUISANCE_PREFIXES):
                w[i] = self.nuisance_prior_weight
        return w

    def with_prior(self, weight: float, nuisance_weight: float) -> RetargetOptions:
        """A copy with the given ridge prior (see the attributes)."""
        return dataclasses.replace(self, prior_weight=float(weight),
                                   nuisance_prior_weight=float(nuisance_weight))


ACCURATE = RetargetOptions(points=MESH_POINTS, xtol=1e-10, ftol=1e-12, gtol=1e-12, max_nfev=200)
"""The slow preset: every mesh vertex, converged to machine precision."""
FAST = RetargetOptions(points=FIT_POINTS, xtol=1e-6, ftol=1e-6, gtol=1e-8, max_nfev=8)
"""The real-time preset: ``FIT_POINTS``, at most 8 evaluations, tolerances at tracker noise."""


@dataclass(frozen=True)
class RetargetResult:
    """One fitted frame.

    Attributes:
        coeffs: float64 [K] in [0, 1], ``avatars.rig.COEFFICIENTS`` order.
        pose: float64 [6] (pitch, yaw, roll radians; tx, ty fractions of the retargeter's
            ``size``; scale) relative to the driver's neutral.
        rms_iod: root-mean-square keypoint residual in inter-ocular distances of the driver's
            neutral (over the fitted vertices; the prior's residuals not included).
        rms_px: the same in driver pixels.
        nfev: residual evaluations the solver made.
        seconds: the solver's wall time.
    """

    coeffs: np.ndarray
    pose: np.ndarray
    rms_iod: float
    rms_px: float
    nfev: int
    seconds: float

    def named(self) -> dict[str, float]:
        """Coefficients as an ARKit name → value mapping."""
        return {name: float(v) for name, v in zip(COEFFICIENTS, self.coeffs)}


class Retargeter:
    """Fits a driver's frames against a rig of the driver's own neutral face.

    Args:
        driver_neutral: float [478, 3] pixels (z in x's scale; mediapipe's normalised z times
            the frame width), the driver looking at the camera with a relaxed face.
        size: pixels per unit of ``tx``, ``ty`` (the side of the driver's frame; the webcam
            driver passes the driver's IOD so translations come out in IODs).
        options: ``ACCURATE`` (default), ``FAST`` or any ``RetargetOptions``.

    Attributes: ``rig`` (the driver's full ``Rig``), ``options``, ``points`` (int64 [N], the
    fitted vertices).

    Raises ``ValueError`` for landmarks of the wrong shape or non-finite values, or fitted
    points outside the mesh.
    """

    def __init__(self, driver_neutral: np.ndarray, size: float,
                 options: RetargetOptions = ACCURATE) -> None:
        self.rig = Rig.from_landmarks(driver_neutral, size)
        self.options = options
        idx = np.asarray(options.points, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= T.N_MESH:
            raise ValueError(f"fitted points must be mesh vertex indices in [0, {T.N_MESH})")
        self.points = idx
        self._prior = options.prior()
        self._prior_jac = np.zeros((N_COEFFICIENTS, N_PARAMS))
        self._prior_jac[:, :N_COEFFICIENTS] = np.diag(self._prior)
        self._previous = START.copy()
        r, n = self.rig, len(idx)
        # the rig's model (``Rig.keypoints3d``) on the fitted vertices, einsums as BLAS products
        self._basis = r.basis[:, idx].reshape(N_COEFFICIENTS, n * 3)
        self._q0 = r.q0[idx].reshape(1, n, 3)
        self._c0, self._c1 = r.closure[0][idx][None], r.closure[1][idx][None]
        self._press = r.press[:, idx]
        self._h = r.head_centre
        self._proj = r.frame.iod * r.frame.axes[:2].T  # face frame → image x, y
        self._origin = r.frame.origin[:2]

    @property
    def iod(self) -> float:
        """The driver neutral's inter-ocular distance in pixels."""
        return self.rig.iod

    def predict(self, params: np.ndarray) -> np.ndarray:
        """Keypoints of the fitted vertices: params float [B, K + 6] (coefficients, then the
        pose) → float64 [B, N, 2] driver pixels; equal to ``Rig.keypoints3d`` on those
        vertices."""
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

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """d keypoints / d params at x float [K + 6]: float64 [N·2, K + 6] (pixels per unit).

        The coefficients enter linearly through the basis and bilinearly through the lip
        closure, so their K columns are exact derivatives (``Rig.expression`` differentiated,
        the closure clip's derivative taken as 0 outside (0, 1)); the 6 pose columns are forward
        differences (``POSE_STEP``, backward at an upper bound) of one batched evaluation."""
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
        steps = np.where(x[k:] + POSE_STEP <= UPPER[k:], POSE_STEP, -POSE_STEP)
        batch = np.repeat(x[None], 7, axis=0)
        batch[1:, k:] += np.diag(steps)
        pred = self.predict(batch).reshape(7, -1)
        jp = (pred[1:] - pred[0]) / steps[:, None]
        return np.concatenate([jc, jp]).T

    def reset(self) -> None:
        """Start the next warm-started fit from the neutral (after the face was lost)."""
        self._previous = START.copy()

    def fit(self, observed: np.ndarray, warm_start: bool = True) -> RetargetResult:
        """Fit one frame.

        Args:
            observed: float [478, 2|3] tracked landmarks in the driver's pixel frame.
            warm_start: start from the previous frame's solution (video); else from neutral.

        Returns a ``RetargetResult``. Raises ``ValueError`` for a wrong shape or non-finite
        input.
        """
        obs = np.asarray(observed, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[0] != T.N_LANDMARKS or obs.shape[1] not in (2, 3):
            raise ValueError(f"observed landmarks must be [478, 2|3], got {list(obs.shape)}")
        if not np.isfinite(obs).all():
            raise ValueError("observed landmarks contain NaN or infinite values")
        target = obs[self.points, :2]
        scale = self.rig.iod
        k = N_COEFFICIENTS
        prior, prior_jac, predict = self._prior, self._prior_jac, self.predict

        def residuals(x: np.ndarray) -> np.ndarray:
            r = ((predict(x[None])[0] - target) / scale).ravel()
            return np.concatenate([r, prior * x[:k]])

        def jacobian(x: np.ndarray) -> np.ndarray:
            return np.concatenate([self.jacobian(x) / scale, prior_jac])

        o = self.options
        started = time.perf_counter()
        start = np.clip(self._previous if warm_start else START, LOWER, UPPER)
        sol = least_squares(residuals, start, jac=jacobian, bounds=(LOWER, UPPER),
                            method="trf", x_scale="jac", xtol=o.xtol, ftol=o.ftol, gtol=o.gtol,
                            max_nfev=o.max_nfev)
        seconds = time.perf_counter() - started
        self._previous = sol.x
        rms = float(np.sqrt(np.mean(sol.fun[:-k].reshape(-1, 2) ** 2 * 2)))
        return RetargetResult(coeffs=sol.x[:k].copy(), pose=sol.x[k:].copy(), rms_iod=rms,
                              rms_px=rms * scale, nfev=int(sol.nfev), seconds=seconds)
