"""``facecast rig-preview``: the avatar's crop with rig keypoints drawn for a handful of poses.

The image under the overlay is the neutral source crop (no renderer is involved); grey lines are
the neutral contours, coloured lines and dots the rig's keypoints for each pose, so what the rig
moves, and how far, can be checked by eye.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avatars import Avatar
from avatars import topology as T
from avatars.rig import NEUTRAL_POSE, Rig, coefficients_from_mapping, pose_vector


@dataclass(frozen=True)
class PreviewPose:
    """One panel: a label, named coefficients and a head pose [6]."""

    label: str
    coeffs: dict[str, float]
    pose: np.ndarray


DEFAULT_POSES: tuple[PreviewPose, ...] = (
    PreviewPose("neutral", {}, NEUTRAL_POSE),
    PreviewPose("jawOpen 1", {"jawOpen": 1.0}, NEUTRAL_POSE),
    PreviewPose("jawOpen 1 + mouthClose 1", {"jawOpen": 1.0, "mouthClose": 1.0}, NEUTRAL_POSE),
    PreviewPose("mouthSmile 1", {"mouthSmile": 1.0}, NEUTRAL_POSE),
    PreviewPose("mouthPucker 1", {"mouthPucker": 1.0}, NEUTRAL_POSE),
    PreviewPose("eyeBlink 1", {"eyeBlink": 1.0}, NEUTRAL_POSE),
    PreviewPose("yaw -15 deg", {}, pose_vector(yaw=np.radians(-15.0))),
    PreviewPose("yaw +15 deg", {}, pose_vector(yaw=np.radians(15.0))),
)

_CONTOURS: tuple[tuple[tuple[int, ...], tuple[int, int, int], bool], ...] = (
    (T.LIPS_OUTER_UPPER, (255, 80, 80), False),
    (T.LIPS_OUTER_LOWER, (255, 80, 80), False),
    (T.LIPS_INNER_UPPER, (255, 200, 0), False),
    (T.LIPS_INNER_LOWER, (255, 200, 0), False),
    (T.RIGHT_EYE_UPPER, (0, 220, 255), False),
    (T.RIGHT_EYE_LOWER, (0, 220, 255), False),
    (T.LEFT_EYE_UPPER, (0, 220, 255), False),
    (T.LEFT_EYE_LOWER, (0, 220, 255), False),
    (T.RIGHT_BROW_UPPER, (120, 255, 120), False),
    (T.LEFT_BROW_UPPER, (120, 255, 120), False),
    (T.FACE_OVAL, (255, 255, 255), True),
)


def _polylines(img: np.ndarray, kp: np.ndarray, scale: float, colour: tuple[int, int, int] | None,
               thickness: int) -> None:
    for ids, col, closed in _CONTOURS:
        pts = np.round(kp[list(ids)] * scale * 16).astype(np.int32)  # 4 fractional bits
        cv2.polylines(img, [pts], closed, colour or col, thickness, cv2.LINE_AA, shift=4)


def draw_panel(crop: np.ndarray, neutral: np.ndarray, keypoints: np.ndarray, label: str,
               panel: int) -> np.ndarray:
    """One panel, uint8 [panel, panel, 3] RGB.

    Args:
        crop: uint8 [R, R, 3] RGB render crop.
        neutral, keypoints: [478, 2] pixels of the R × R crop.
        label: caption drawn at the top.
        panel: output side in pixels.
    """
    scale = panel / crop.shape[0]
    img = cv2.resize(crop, (panel, panel), interpolation=cv2.INTER_CUBIC)
    img = (img.astype(np.float32) * 0.75).astype(np.uint8)
    _polylines(img, neutral, scale, (150, 150, 150), 1)
    _polylines(img, keypoints, scale, None, 1)
    for x, y in np.round(keypoints[: T.N_MESH] * scale).astype(int):
        cv2.circle(img, (int(x), int(y)), 1, (255, 255, 255), -1, cv2.LINE_AA)
    for x, y in np.round(keypoints[T.N_MESH:] * scale).astype(int):
        cv2.circle(img, (int(x), int(y)), 2, (255, 0, 255), -1, cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (panel - 1, 24), (0, 0, 0), -1)
    cv2.putText(img, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return img


def rig_preview(avatar: Avatar, out: str | Path, poses: tuple[PreviewPose, ...] = DEFAULT_POSES,
                size: int = 256, panel: int = 384, columns: int = 4) -> Path:
    """Draw ``poses`` on ``avatar`` and write a PNG grid to ``out``.

    Args:
        avatar: a loaded avatar.
        out: output .png path (its folder must exist).
        poses: the panels.
        size: render crop side R the rig works in (pixels).
        panel: side of each drawn panel (pixels).
        columns: panels per row.

    Returns the written path. Raises ``OSError`` if it cannot be written.
    """
    rig = Rig.for_avatar(avatar, size)
    crop = avatar.crop_image(size)
    coeffs = np.stack([coefficients_from_mapping(p.coeffs) for p in poses])
    kps = rig.keypoints(coeffs, np.stack([p.pose for p in poses]))
    neutral = rig.neutral[:, :2]
    panels = [draw_panel(crop, neutral, kp, p.label, panel) for p, kp in zip(poses, kps)]
    rows = -(-len(panels) // columns)
    grid = np.zeros((rows * panel, columns * panel, 3), np.uint8)
    for i, img in enumerate(panels):
        r, c = divmod(i, columns)
        grid[r * panel:(r + 1) * panel, c * panel:(c + 1) * panel] = img
    path = Path(out)
    ok, data = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(data.tobytes())
    return path
