"""Retargeting: a driver face's landmarks → head pose and ARKit coefficients, by least squares.

Given the driver's neutral landmarks (one calibration frame, [478, 3]) and a tracked frame of
the same driver ([478, 2] or [478, 3], same pixel frame), fit the parameters of a rig built on
the driver's neutral so that its projected keypoints match the tracked ones:

    minimise  Σ_i ‖ rig(c, pose)_i − observed_i ‖²   over c ∈ [0, 1]^K and the head pose,

over the 468 mesh points (the iris points move with gaze, which the rig does not model). The
solver is SciPy's bounded trust-region reflective least squares (``scipy.optimize.least_squares``,
method ``trf``) with a forward-difference Jacobian computed as one batched rig evaluation. The
coefficients and pose then drive any other avatar's rig: any face can drive any avatar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from avatars import topology as T
from avatars.rig import COEFFICIENTS, N_COEFFICIENTS, NEUTRAL_POSE, Rig

_ANGLE_LIMIT = np.pi / 2
_LOWER = np.concatenate([np.zeros(N_COEFFICIENTS), [-_ANGLE_LIMIT] * 3, [-2.0, -2.0, 0.2]])
_UPPER = np.concatenate([np.ones(N_COEFFICIENTS), [_ANGLE_LIMIT] * 3, [2.0, 2.0, 5.0]])
_FIT_POINTS = np.arange(T.N_MESH)
_STEP = 1e-6


@dataclass(frozen=True)
class RetargetResult:
    """One fitted frame.

    Attributes:
        coeffs: float64 [K] in [0, 1], ``avatars.rig.COEFFICIENTS`` order.
        pose: float64 [6] (pitch, yaw, roll radians; tx, ty fractions of the driver frame's
            ``size``; scale) relative to the driver's neutral.
        rms_px: root-mean-square keypoint residual in driver pixels.
        rms_iod: the same in inter-ocular distances of the driver's neutral.
    """

    coeffs: np.ndarray
    pose: np.ndarray
    rms_px: float
    rms_iod: float

    def named(self) -> dict[str, float]:
        """Coefficients as an ARKit name → value mapping."""
        return {name: float(v) for name, v in zip(COEFFICIENTS, self.coeffs)}


class Retargeter:
    """Fits a driver's frames against a rig of the driver's own neutral face.

    Args:
        driver_neutral: [478, 3] pixels (z in x's scale; mediapipe's normalised z times the
            frame width), the driver looking at the camera with a relaxed face.
        size: side of the driver's pixel frame (``tx``, ``ty`` are fractions of it).

    Raises ``ValueError`` for landmarks of the wrong shape or non-finite values.
    """

    def __init__(self, driver_neutral: np.ndarray, size: float) -> None:
        self.rig = Rig.from_landmarks(driver_neutral, size)
        self._previous = np.concatenate([np.zeros(N_COEFFICIENTS), NEUTRAL_POSE])

    def _predict(self, params: np.ndarray) -> np.ndarray:
        """params [B, K + 6] → keypoints [B, 468, 2] float64."""
        kp = self.rig.keypoints3d(params[:, :N_COEFFICIENTS], params[:, N_COEFFICIENTS:])
        return kp[:, _FIT_POINTS, :2]

    def fit(self, observed: np.ndarray, warm_start: bool = True) -> RetargetResult:
        """Fit one frame.

        Args:
            observed: [478, 2|3] tracked landmarks in the driver's pixel frame.
            warm_start: start from the previous frame's solution (video); else from neutral.

        Returns a ``RetargetResult``. Raises ``ValueError`` for a wrong shape or non-finite
        input.
        """
        obs = np.asarray(observed, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[0] != T.N_LANDMARKS or obs.shape[1] not in (2, 3):
            raise ValueError(f"observed landmarks must be [478, 2|3], got {list(obs.shape)}")
        if not np.isfinite(obs).all():
            raise ValueError("observed landmarks contain NaN or infinite values")
        target = obs[_FIT_POINTS, :2]
        scale = self.rig.iod

        def residuals(x: np.ndarray) -> np.ndarray:
            return ((self._predict(x[None])[0] - target) / scale).ravel()

        def jacobian(x: np.ndarray) -> np.ndarray:
            n = x.size
            steps = np.where(x + _STEP <= _UPPER, _STEP, -_STEP)
            batch = np.repeat(x[None], n + 1, axis=0)
            batch[1:][np.arange(n), np.arange(n)] += steps
            pred = self._predict(batch).reshape(n + 1, -1) / scale
            return ((pred[1:] - pred[0]) / steps[:, None]).T

        start = self._previous if warm_start else np.concatenate(
            [np.zeros(N_COEFFICIENTS), NEUTRAL_POSE])
        start = np.clip(start, _LOWER, _UPPER)
        sol = least_squares(residuals, start, jac=jacobian, bounds=(_LOWER, _UPPER),
                            method="trf", x_scale="jac", xtol=1e-10, ftol=1e-12, gtol=1e-12,
                            max_nfev=200)
        self._previous = sol.x
        rms = float(np.sqrt(np.mean(sol.fun.reshape(-1, 2) ** 2 * 2)))
        return RetargetResult(coeffs=sol.x[:N_COEFFICIENTS].copy(),
                              pose=sol.x[N_COEFFICIENTS:].copy(),
                              rms_px=rms * scale, rms_iod=rms)
