"""The One Euro filter (Casiez, Roussel & Vogel, "1€ Filter: A Simple Speed-based Low-pass
Filter for Noisy Input in Interactive Systems", CHI 2012), vectorised over arrays.

A first-order low-pass filter whose cutoff rises with the signal's speed: slow motion is
smoothed hard (no jitter when the face is still), fast motion passes with little lag.

    Te        = t_i − t_{i−1}                                   (seconds)
    α(fc)     = 1 / (1 + τ/Te),  τ = 1 / (2π·fc)                (smoothing factor of a cutoff)
    dx̂_i     = α(d_cutoff)·(x_i − x̂_{i−1})/Te + (1 − α(d_cutoff))·dx̂_{i−1}
    fc_i      = min_cutoff + beta·|dx̂_i|
    x̂_i      = α(fc_i)·x_i + (1 − α(fc_i))·x̂_{i−1}

Parameters (the paper's tuning procedure: set beta = 0 and lower ``min_cutoff`` until jitter at
rest is acceptable, then raise ``beta`` until lag in fast motion is acceptable):

* ``min_cutoff`` (Hz): cutoff at rest. Lower = smoother and laggier when still.
* ``beta`` (1/unit of the signal): how fast the cutoff grows with speed. Higher = less lag.
* ``d_cutoff`` (Hz): cutoff of the speed estimate; the paper fixes it at 1 Hz.

Defaults suit keypoints in pixels at 25–60 fps (``KEYPOINT_PARAMS``); ``COEFFICIENT_PARAMS``
suit expression coefficients in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """Filter parameters: ``min_cutoff`` and ``d_cutoff`` in Hz, ``beta`` per signal unit."""

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise ValueError(f"One Euro parameters out of range: {self}")


KEYPOINT_PARAMS = OneEuroParams(min_cutoff=1.5, beta=0.05, d_cutoff=1.0)
"""For keypoints in crop pixels (256-pixel crop): 1.5 Hz at rest removes tracker jitter; beta
0.05 lets a 100 px/s motion through at ~6.5 Hz cutoff."""
COEFFICIENT_PARAMS = OneEuroParams(min_cutoff=3.0, beta=1.0, d_cutoff=1.0)
"""For expression coefficients in [0, 1]: 3 Hz at rest; a lip opening at 5 units/s passes at 8 Hz,
fast enough for syllable rates of 4–5 Hz."""


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters a stream of same-shaped float arrays (e.g. keypoints [478, 2], coefficients [K]).

    Each element is filtered independently, with its own adaptive cutoff. Not thread-safe; one
    filter per stream.

    Args:
        params: see ``OneEuroParams``.
    """

    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self._t: float | None = None
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the history; the next sample passes through unchanged."""
        self._t = self._x = self._dx = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample ``x`` taken at time ``t`` (seconds, strictly increasing).

        Returns the filtered array (float64, shape of ``x``). Raises ``ValueError`` if the shape
        changes or time does not increase.
        """
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or self._dx is None:
            self._t, self._x, self._dx = float(t), x.copy(), np.zeros_like(x)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"sample shape changed from {self._x.shape} to {x.shape}")
        dt = float(t) - self._t
        if not dt > 0:
            raise ValueError(f"timestamps must increase (got {t} after {self._t})")
        p = self.params
        dx = (x - self._x) / dt
        dx_hat = self._dx + _alpha(p.d_cutoff, dt) * (dx - self._dx)
        cutoff = p.min_cutoff + p.beta * np.abs(dx_hat)
        x_hat = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t, self._x, self._dx = float(t), x_hat, dx_hat
        return x_hat.copy()
