"""Random rig coefficients and head poses within the rig's range (training data and evaluation).

Both draw from a ``numpy.random.Generator``, so a seed fixes the sequence.
"""

from __future__ import annotations

import numpy as np

from avatars.rig import INDEX, N_COEFFICIENTS

POSE_LIMITS = {"pitch": 0.35, "yaw": 0.35, "roll": 0.26, "tx": 0.04, "ty": 0.04, "scale": 0.08}
"""Half-ranges of sampled head poses: radians (±20°, ±20°, ±15°), crop fractions, factor − 1."""


def sample_coefficients(rng: np.random.Generator) -> np.ndarray:
    """Random rig coefficients, float64 [19] in ``avatars.rig.COEFFICIENTS`` order.

    About 12% of draws are neutral (all zero); otherwise each group is active with its own
    probability (jawOpen most often, wide-open jaw included), values skewed towards 1 by a 0.7
    power, left/right sometimes asymmetric; one or both eyes blink in 40% of draws; and
    mouthClose + max(mouthPress) ≤ 1 so the draw is inside the rig's invertible domain.
    """
    c = np.zeros(N_COEFFICIENTS)
    if rng.random() < 0.12:
        return c

    def draw(p: float) -> float:
        return float(rng.random() ** 0.7) if rng.random() < p else 0.0

    c[INDEX["jawOpen"]] = draw(0.7)
    c[INDEX["mouthClose"]] = draw(0.2)
    c[INDEX["mouthFunnel"]] = draw(0.25)
    c[INDEX["mouthPucker"]] = draw(0.2)
    for group, p in (("mouthSmile", 0.3), ("mouthStretch", 0.2), ("mouthUpperUp", 0.2),
                     ("mouthLowerDown", 0.2), ("mouthPress", 0.12), ("browOuterUp", 0.2)):
        v = draw(p)
        asym = rng.uniform(0.6, 1.0) if rng.random() < 0.3 else 1.0
        left, right = (v, v * asym) if rng.random() < 0.5 else (v * asym, v)
        c[INDEX[group + "Left"]], c[INDEX[group + "Right"]] = left, right
    blink = rng.random()
    if blink < 0.3:
        v = rng.uniform(0.3, 1.0)
        c[INDEX["eyeBlinkLeft"]] = c[INDEX["eyeBlinkRight"]] = v
    elif blink < 0.4:
        c[INDEX["eyeBlinkLeft" if rng.random() < 0.5 else "eyeBlinkRight"]] = rng.uniform(0.3, 1)
    c[INDEX["browInnerUp"]] = draw(0.2)
    press = max(c[INDEX["mouthPressLeft"]], c[INDEX["mouthPressRight"]])
    c[INDEX["mouthClose"]] = min(c[INDEX["mouthClose"]], 1.0 - press)
    return c


def sample_pose(rng: np.random.Generator, wide: float = 0.7) -> np.ndarray:
    """Random head pose, float64 [6] (``avatars.rig.POSE_NAMES``): uniform over the full
    ``POSE_LIMITS`` in a share ``wide`` of draws, over a quarter of them otherwise."""
    spread = 1.0 if rng.random() < wide else 0.25
    lim = POSE_LIMITS
    return np.array([
        rng.uniform(-1, 1) * lim["pitch"] * spread,
        rng.uniform(-1, 1) * lim["yaw"] * spread,
        rng.uniform(-1, 1) * lim["roll"] * spread,
        rng.uniform(-1, 1) * lim["tx"] * spread,
        rng.uniform(-1, 1) * lim["ty"] * spread,
        1.0 + rng.uniform(-1, 1) * lim["scale"] * spread,
    ])
