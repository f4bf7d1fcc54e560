"""Training pairs for the neural renderer, drawn from the procedural teacher (``engines.teacher``).

One sample = a real portrait made into a new identity (``morph_landmarks``: face, eye, nose, mouth,
lip and jaw shape changed by a piecewise-affine warp of the mesh, the rig rebuilt on the new shape;
``restyle``: skin tone, lip colour, background/hair/clothes recolouring, side light, white balance,
and a painting-style or monochrome filter), augmented (horizontal flip, crop scale/shift/rotation
jitter, colour), cropped to R × R like an enrolled avatar; random rig coefficients and head pose within
the rig's range (wide-open jaw, pucker, funnel, smile, stretch, blinks, brows, pitch/yaw ±20°,
roll ±15°; ``avatars.expressions``); the driving keypoints from the rig; and the teacher's target image, backward flow and
mouth-interior alpha. Everything comes from a ``numpy.random.Generator``, so a seed fixes the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatars import topology as T
from avatars.bundle import inter_ocular_distance
from avatars.enroll import crop_box_for, detect_faces
from avatars.expressions import sample_coefficients, sample_pose
from avatars.rig import FaceFrame, Rig
from engines import teacher
from engines.training.losses import BLINK_BOOST_P, BLINK_INDICES, focus_map

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
        alpha: [R, R] teacher alpha (drawn mouth interior and lids).
        focus: [R, R] loss weight, 1 + ``FOCUS_GAIN`` on the eyes and the mouth (``focus_map``).
    """

    source: np.ndarray
    source_keypoints: np.ndarray
    driving_keypoints: np.ndarray
    target: np.ndarray
    flow: np.ndarray
    alpha: np.ndarray
    focus: np.ndarray


MORPH_P = 0.8
"""Share of samples whose portrait is made into a new face shape (``morph_landmarks``)."""


def morph_landmarks(landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new face shape: float32 [478, 3] landmarks (image pixels, z unchanged) with random
    changes, in the face's own frame and IOD units, of the face's aspect (±6%), eye spacing
    (±0.04) and size (0.9–1.12×), nose length (±0.04), mouth width (0.88–1.12×), lip thickness
    (0.85–1.2×) and jaw width (±8% at the chin), each spread by a Gaussian window so the mesh
    does not fold. The image is moved onto it by the teacher's piecewise-affine warp."""
    lm = np.asarray(landmarks, np.float64)
    flat = np.concatenate([lm[:, :2], np.zeros((len(lm), 1))], 1)  # in the image plane
    frame = FaceFrame.from_landmarks(flat)
    ex, ey, iod = frame.axes[:2, 0], frame.axes[:2, 1], frame.iod
    q = frame.to_face(flat)[:, :2]  # [478, 2] IOD units
    d = np.zeros_like(q)
    d += q * rng.uniform(-0.06, 0.06, 2)

    def window(centre: np.ndarray, sigma: float) -> np.ndarray:
        return np.exp(-((q - centre) ** 2).sum(1) / (2 * sigma ** 2))[:, None]

    for side, ids in ((-1.0, T.RIGHT_EYE_UPPER + T.RIGHT_EYE_LOWER),
                      (1.0, T.LEFT_EYE_UPPER + T.LEFT_EYE_LOWER)):
        e = q[list(ids)].mean(0)
        w = window(e, 0.22)
        d += w * np.array([side * rng.uniform(-0.04, 0.04), 0.0])
        d += w * (q - e) * (rng.uniform(0.9, 1.12) - 1.0)
    nose = q[T.NOSE_TIP]
    d += window(nose, 0.2) * np.array([0.0, rng.uniform(-0.04, 0.04)])
    mouth = q[list(T.LIPS_OUTER_UPPER + T.LIPS_OUTER_LOWER)].mean(0)
    wm = window(mouth, 0.3)
    d += wm * (q - mouth) * np.array([rng.uniform(0.88, 1.12) - 1.0, 0.0])
    d += window(mouth, 0.16) * (q - mouth) * np.array([0.0, rng.uniform(0.85, 1.2) - 1.0])
    below = np.clip((q[:, 1] - mouth[1]) / 0.6, 0.0, 1.0)[:, None]
    d += below * q * np.array([rng.uniform(-0.08, 0.08), 0.0])
    out = lm.copy()
    out[:, :2] += (d[:, :1] * ex + d[:, 1:] * ey) * iod
    return out.astype(np.float32)


def _polygon_mask(size: int, polygon: np.ndarray, blur: float) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(mask, (0, 0), max(blur, 0.5)) if blur > 0 else mask


def restyle(image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Appearance of a new identity for uint8 [R, R, 3] RGB with its keypoints [478, 2] (crop
    pixels): each step with its own probability — skin tone (Lab lightness 0.65–1.2×, a* −4…+10,
    b* −6…+12 inside the face oval), lip colour, hue/saturation of everything outside the face
    (background, hair, clothes), a linear side light (±40% across the crop), white balance (±12%
    per channel), then a painting-style filter (``cv2.stylization``) or a monochrome/sepia
    print. Returns uint8 [R, R, 3]."""
    size = image.shape[0]
    kp = np.asarray(keypoints, np.float64)[:, :2]
    iod = inter_ocular_distance(kp)
    img = image.astype(np.float32) / 255.0
    face = _polygon_mask(size, kp[list(T.FACE_OVAL)], 0.08 * iod)[..., None]
    if rng.random() < 0.7:
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)
        lab[..., 0] *= rng.uniform(0.65, 1.2)
        lab[..., 1] += rng.uniform(-4, 10)
        lab[..., 2] += rng.uniform(-6, 12)
        toned = np.clip(cv2.cvtColor(np.clip(lab, [0, -127, -127], [100, 127, 127])
                                     .astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)
        img = img * (1 - face) + toned * face
    if rng.random() < 0.5:
        outer = np.concatenate([kp[list(T.LIPS_OUTER_UPPER)], kp[list(T.LIPS_OUTER_LOWER)][::-1]])
        lips = _polygon_mask(size, outer, 0.02 * iod)[..., None]
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)
        lab[..., 0] *= rng.uniform(0.8, 1.1)
        lab[..., 1] += rng.uniform(-6, 14)
        tinted = np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)
        img = img * (1 - lips) + tinted * lips
    if rng.random() < 0.6:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 360)) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 1)
        other = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)
        keep = np.clip(face * 1.5, 0, 1)
        img = img * keep + other * (1 - keep)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
        img = img * (1 + rng.uniform(-0.4, 0.4) * (np.cos(a) * xs + np.sin(a) * ys))[..., None]
    if rng.random() < 0.5:
        img = img * rng.uniform(0.88, 1.12, 3)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    u = rng.random()
    if u < 0.12:
        out = cv2.stylization(out, sigma_s=float(rng.uniform(15, 50)),
                              sigma_r=float(rng.uniform(0.15, 0.4)))
    elif u < 0.17:
        grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
        tint = np.array([1.0, 0.9, 0.72]) if rng.random() < 0.5 else np.ones(3)
        out = np.clip(grey * tint, 0, 255).astype(np.uint8)
    return out


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
    landmarks, rig = face.landmarks, face.rig
    skp = apply_affine(landmarks, m)[:, :2]
    if augment and rng.random() < MORPH_P:
        landmarks = morph_landmarks(face.landmarks, rng)
        rig = Rig.from_landmarks(landmarks, face.crop_box[2])
        new_kp = apply_affine(landmarks, m)[:, :2]
        flow = teacher.piecewise_affine_flow(skp, new_kp, size)
        src = np.clip(teacher.remap(src, flow) + 0.5, 0, 255).astype(np.uint8)
        skp = new_kp
    if augment:
        src = restyle(src, skp, rng)
        src = colour_jitter(src, rng)
    coeffs = sample_coefficients(rng)[None]
    if augment and rng.random() < BLINK_BOOST_P:
        coeffs[0, BLINK_INDICES] = rng.uniform(0.85, 1.0)
    pose = sample_pose(rng)[None]
    kp3 = apply_affine(rig.keypoints3d(coeffs, pose)[0], m)
    frame = teacher.render(src, skp, kp3[:, :2], driving_depth=kp3[:, 2])
    return Sample(src, skp.astype(np.float32), kp3[:, :2].astype(np.float32), frame.image,
                  frame.flow, frame.alpha, focus_map(size, kp3[:, :2], frame.alpha))
