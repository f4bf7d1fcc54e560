"""Training losses of the neural renderer against the procedural teacher (``engines.teacher``).

Shared by the offline training run (``tools/train_renderer.py``) and the per-avatar adaptation
(``engines.training.adapt``, ``facecast adapt``). All L1 unless stated: the output frame vs the
teacher's, weighted by ``focus_map`` (eyes and mouth × (1 + ``FOCUS_GAIN``)); the backward
displacement on the motion grid vs the teacher's flow, where the teacher shows the warped source;
the painted RGB vs the teacher inside the teacher's mouth; the blend mask vs the teacher's alpha
(binary cross-entropy). Also the emphasis both put on what a viewer looks at first: the loss
weight on the eyes and the mouth (``FOCUS_GAIN``) and the share of nearly shut eyes among the
driving poses (``BLINK_BOOST_P``).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from avatars import topology as T
from avatars.bundle import inter_ocular_distance
from avatars.rig import COEFFICIENTS
from engines.training.renderer_model import DISP_SCALE, RendererDims, normalise

FOCUS_GAIN = 4.0
"""Extra loss weight on the eyes and the mouth: a blink and an open mouth are a few hundred of
the crop's 65 536 pixels, and a viewer looks there first (issue 17)."""
BLINK_INDICES = [list(COEFFICIENTS).index("eyeBlinkLeft"),
                 list(COEFFICIENTS).index("eyeBlinkRight")]
"""Columns of eyeBlinkLeft/Right in the rig's coefficient vector."""
BLINK_BOOST_P = 0.25
"""Share of training poses (``tools/renderer_data``) and adaptation poses (``facecast adapt``)
whose eyes are forced nearly shut (eyeBlink 0.85–1 on both), on top of ``sample_coefficients``'
own blinks: the lids' last few pixels are what a viewer and mediapipe read as a blink, and the
first training run (4000 steps) still left them 26–45% open."""
LOSS_WEIGHTS = {"frame": 1.0, "flow": 0.5, "painted": 0.5, "mask": 0.1}
"""Weights of the terms in ``renderer_losses``' ``total``."""


def focus_map(size: int, driving_keypoints: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Loss weight float32 [R, R]: 1 + ``FOCUS_GAIN`` inside both driving eye polygons and the
    outer-lip polygon grown by 0.12 IOD, and wherever the teacher draws (alpha > 0.02); 1
    elsewhere. ``driving_keypoints``: [478, 2+] crop pixels; ``alpha``: [R, R] teacher alpha."""
    kp = np.asarray(driving_keypoints, np.float64)[:, :2]
    iod = inter_ocular_distance(kp)
    mask = np.zeros((size, size), np.uint8)
    for upper, lower in ((T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER),
                         (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER),
                         (T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER)):
        poly = np.concatenate([kp[list(upper)], kp[list(lower)][::-1]])
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    r = max(1, int(round(0.12 * iod)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    focus = np.maximum(mask.astype(np.float32), (alpha > 0.02).astype(np.float32))
    return (1.0 + FOCUS_GAIN * focus).astype(np.float32)


def renderer_losses(model_out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                    dims: RendererDims) -> dict[str, torch.Tensor]:
    """Loss terms for one batch (see the module docstring).

    Args:
        model_out: ``Renderer.forward_train``'s dict (``frames``, ``disp``, ``painted``, ``mask``).
        batch: float32 tensors ``target`` [B, 3, R, R] in [0, 1], ``flow`` [B, 2, R, R] teacher
            backward flow in crop pixels, ``alpha`` [B, 1, R, R], ``focus`` [B, 1, R, R].
        dims: the renderer's dimensions (G = ``motion_grid``, R = ``size``).

    Returns scalar tensors ``total`` (``LOSS_WEIGHTS``), ``frame``, ``flow``, ``painted``,
    ``mask``.
    """
    g = dims.motion_grid
    target = batch["target"]
    alpha = batch["alpha"]
    focus = batch["focus"]
    frame = ((model_out["frames"] - target).abs() * focus).mean() / focus.mean()
    flow_n = normalise(batch["flow"].permute(0, 2, 3, 1), dims.size).permute(0, 3, 1, 2)
    flow_g = F.adaptive_avg_pool2d(flow_n, g)
    alpha_g = F.adaptive_avg_pool2d(alpha, g)
    c = (torch.arange(g, dtype=torch.float32) + 0.5) / g * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    base = torch.stack([xx, yy])[None]
    disp_t = flow_g - base
    w = 1.0 - alpha_g
    flow = ((model_out["disp"] - disp_t).abs() * DISP_SCALE * w).mean()
    n2 = 2 * g
    alpha_2g = F.adaptive_avg_pool2d(alpha, n2)
    target_2g = F.adaptive_avg_pool2d(target, n2)
    inside = (alpha_2g > 0.5).float()
    painted = ((model_out["painted"] - target_2g).abs() * inside).sum() / (3 * inside.sum() + 1)
    mask = F.binary_cross_entropy(model_out["mask"].clamp(1e-4, 1 - 1e-4), alpha_2g)
    terms = {"frame": frame, "flow": flow, "painted": painted, "mask": mask}
    total = sum(LOSS_WEIGHTS[k] * v for k, v in terms.items())
    return {"total": total, **terms}
