"""Training pairs for the neural renderer, drawn from the procedural teacher (``engines.teacher``).

One sample = a real portrait, augmented (horizontal flip, crop scale/shift/rotation jitter,
colour), cropped to R × R like an enrolled avatar; random rig coefficients and head pose within
the rig's range (wide-open jaw, pucker, funnel, smile, stretch, blinks, brows, pitch/yaw ±20°,
roll ±15°; ``avatars.expressions``); the driving keypoints from the rig; and the teacher's target image, backward flow and
mouth-interior alpha. Everything comes from a ``numpy.random.Generator``, so a seed fixes the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatars.enroll import crop_box_for, detect_faces
from avatars.expressions import sample_coefficients, sample_pose
from avatars.rig import Rig
from engines import teacher

CROP_JITTER = {"scale": 0.12, "shift": 0.06, "rotate_deg": 8.0}
"""Half-ranges of the source-crop augmentation: relative side, fraction of side, degrees."""


@dataclass(frozen=True)
class Face:
    """A training portrait with its Face Mesh landmarks and rig.

    Attributes:
        name: portrait name (``"-flip"`` appended for the mirrored copy).
        image: uint8 [H, W, 3] RGB.
        landmarks: float32 [478, 3] image pixels (z in x's scale).
        rig: ``Rig`` in image pixels (``size`` = the enrolment crop side).
        crop_box: enrolment-style (x0, y0, side).
    """

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    rig: Rig
    crop_box: tuple[int, int, int]


MAX_CROP_SIDE = 320
"""Portraits are downscaled (area filter) so their crop side is at most this many pixels, which
keeps the per-sample crop warp a mild resampling for R = 256."""


def prepare_faces(portraits: list[tuple[str, np.ndarray]]) -> list[Face]:
    """Detect each portrait and its horizontal mirror with mediapipe (largest face). Portraits
    without a face raise ValueError naming them."""
    faces = []
    for name, image in portraits:
        for suffix, img in (("", image), ("-flip", np.ascontiguousarray(image[:, ::-1]))):
            found = detect_faces(img, max_faces=4)
            if not found:
                raise ValueError(f"no face found in training portrait {name}{suffix}")
            lm = found[0]
            box = crop_box_for(lm, (img.shape[1], img.shape[0]))
            if box[2] > MAX_CROP_SIDE:
                k = MAX_CROP_SIDE / box[2]
                h0, w0 = img.shape[:2]
                img = cv2.resize(img, (round(w0 * k), round(h0 * k)),
                                 interpolation=cv2.INTER_AREA)
                sx, sy = img.shape[1] / w0, img.shape[0] / h0
                lm = (lm * np.array([sx, sy, sx], np.float32)).astype(np.float32)
                box = crop_box_for(lm, (img.shape[1], img.shape[0]))
            faces.append(Face(name + suffix, img, lm, Rig.from_landmarks(lm, box[2]), box))
    return faces


def crop_transform(box: tuple[int, int, int], size: int, scale: float = 1.0,
                   shift: tuple[float, float] = (0.0, 0.0), rotate_deg: float = 0.0) -> np.ndarray:
    """2×3 affine from image pixels to R-crop pixels for a jittered crop box: the box's side is
    multiplied by ``scale``, its centre moved by ``shift`` × side, and it is rotated about its
    centre by ``rotate_deg``. The identity jitter maps the box exactly onto [0, R]²."""
    x0, y0, side = box
    centre = np.array([x0 + side / 2 + shift[0] * side, y0 + side / 2 + shift[1] * side])
    k = size / (side * scale)
    a = np.radians(rotate_deg)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) * k
    t = np.array([size / 2, size / 2]) - rot @ centre
    return np.concatenate([rot, t[:, None]], 1)


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map [N, 2|3] points by a 2×3 affine; z (if present) is scaled by the affine's scale."""
    out = np.array(points, dtype=np.float64)
    out[:, :2] = points[:, :2] @ m[:, :2].T + m[:, 2]
    if out.shape[1] == 3:
        out[:, 2] *= np.sqrt(abs(np.linalg.det(m[:, :2])))
    return out


def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation, hue and gamma jitter of uint8 [H, W, 3] RGB."""
    img = image.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-12, 12)) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 1)
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.75, 1.3) + mean * rng.uniform(0.7, 1.3)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    """One training pair at crop side R (all float32 unless stated).

    Attributes:
        source: uint8 [R, R, 3] augmented source crop.
        source_keypoints, driving_keypoints: [478, 2] crop pixels.
        target: [R, R, 3] teacher image in [0, 1].
        flow: [R, R, 2] teacher backward flow (crop pixels).
        alpha: [R, R] teacher mouth-interior alpha.
    """

    source: np.ndarray
    source_keypoints: np.ndarray
    driving_keypoints: np.ndarray
    target: np.ndarray
    flow: np.ndarray
    alpha: np.ndarray


def make_sample(face: Face, rng: np.random.Generator, size: int = 256,
                augment: bool = True) -> Sample:
    """Draw one augmented training pair from ``face`` (see the module docstring)."""
    if augment:
        j = CROP_JITTER
        m = crop_transform(face.crop_box, size, 1.0 + rng.uniform(-1, 1) * j["scale"],
                           (rng.uniform(-1, 1) * j["shift"], rng.uniform(-1, 1) * j["shift"]),
                           rng.uniform(-1, 1) * j["rotate_deg"])
    else:
        m = crop_transform(face.crop_box, size)
    src = cv2.warpAffine(face.image, m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    if augment:
        src = colour_jitter(src, rng)
    coeffs = sample_coefficients(rng)[None]
    pose = sample_pose(rng)[None]
    kp3 = apply_affine(face.rig.keypoints3d(coeffs, pose)[0], m)
    skp = apply_affine(face.landmarks, m)[:, :2]
    frame = teacher.render(src, skp, kp3[:, :2], driving_depth=kp3[:, 2])
    return Sample(src, skp.astype(np.float32), kp3[:, :2].astype(np.float32), frame.image,
                  frame.flow, frame.alpha)
