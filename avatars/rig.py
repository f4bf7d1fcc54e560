"""The keypoint rig: ARKit expression coefficients + head pose → 478 Face Mesh keypoints.

Model (all arrays float64 inside, float32 out)::

    q0            neutral landmarks in the face frame, [478, 3], inter-ocular distance (IOD) = 1
    q(c)          = q0 + Σ_k c_k · D_k  +  s(c) · (C0 + jawOpen · C1)            (expression)
    p(c, pose)    = h + scale · R(pitch, yaw, roll) · (q(c) − h)                   (head pose)
    keypoints     = crop(origin + IOD · A · p)[:, :2] + (tx, ty) · crop size       (projection)

* The **face frame** (``FaceFrame``) has its origin midway between the eye centres, x toward the
  subject's left eye, y down the face, z away from the camera, and IOD as its unit, so one set of
  proportions serves every avatar; ``A`` maps it back to image axes.
* ``D_k`` are the linear displacement fields (``basis_fields``), one per entry of
  ``COEFFICIENTS``; each is authored by displacing named Face Mesh vertex groups (see
  ``avatars.topology``) and spreading the motion to the surrounding skin (``spread``). Each
  field's function says what moves, how far at coefficient 1 and where the figure comes from.
* Lip closure is the one non-linear part: ``mouthClose`` and ``mouthPressLeft/Right`` close the
  inner-lip gap that the neutral shape and ``jawOpen`` produce, so closure is bilinear in
  (closure, jawOpen) and saturates when the lips meet: ``s = min(1, mouthClose + λ_L·pressLeft +
  λ_R·pressRight)`` per vertex, with λ a left/right weight across the mouth. The rig is exactly
  invertible where ``mouthClose + max(mouthPressLeft, mouthPressRight) ≤ 1`` (``in_domain``).
* **Head pose** rotates the 3-D face about a head centre ``h`` (between the ears, below their
  tragus level: an approximation of the neck pivot) with R = Rz(roll)·Ry(yaw)·Rx(pitch), then
  projects orthographically (weak perspective). Positive pitch looks down, positive yaw turns
  the face toward the subject's left (image right), positive roll turns it clockwise on screen;
  ``tx, ty`` shift by fractions of the crop side; ``scale`` multiplies size (1 = neutral).

Zero coefficients and the neutral pose give back the neutral landmarks exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from avatars import topology as T
from avatars.bundle import Avatar, inter_ocular_distance

COEFFICIENTS: tuple[str, ...] = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthPressLeft",
    "mouthPressRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
)
"""ARKit blendshape names the rig drives, in the order of the coefficient axis."""
N_COEFFICIENTS = len(COEFFICIENTS)
INDEX = {name: i for i, name in enumerate(COEFFICIENTS)}

SYMMETRIC_ALIASES: dict[str, tuple[str, str]] = {
    "mouthSmile": ("mouthSmileLeft", "mouthSmileRight"),
    "mouthStretch": ("mouthStretchLeft", "mouthStretchRight"),
    "mouthUpperUp": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "mouthLowerDown": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "mouthPress": ("mouthPressLeft", "mouthPressRight"),
    "eyeBlink": ("eyeBlinkLeft", "eyeBlinkRight"),
    "browOuterUp": ("browOuterUpLeft", "browOuterUpRight"),
}
"""Side-less names (as a speech-driven motion model emits them) → both ARKit sides."""

POSE_NAMES: tuple[str, ...] = ("pitch", "yaw", "roll", "tx", "ty", "scale")
"""Head pose vector: radians, radians, radians, crop fractions, crop fractions, factor."""
NEUTRAL_POSE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])

# Proportions, in inter-ocular distances (IOD). Adult mean interpupillary distance is about
# 63 mm (Dodgson 2004, "Variation and extrema of human interpupillary distance"), so 0.1 IOD is
# about 6 mm.
JAW_DROP_IOD = 0.55
"""jawOpen = 1 lowers the inner lower lip (midline, vertex 14) by 0.55 IOD ≈ 35 mm: a wide-open
mouth, about three quarters of the clinical normal maximal incisal opening of 40–50 mm."""
JAW_GLIDE_IOD = 0.15
"""Of that drop, 0.15 IOD ≈ 9 mm comes from the condyles' downward glide, the rest from rotation."""
LIP_CLOSE_UPPER_SHARE = 0.35
"""When the lips close over an open gap the upper lip covers 35% of it and the lower lip 65%
(the lower lip is the more mobile; the upper lip is tethered to the maxilla)."""
BLINK_UPPER_SHARE = 0.90
BLINK_LOWER_SHARE = 0.08
"""eyeBlink = 1: the upper lid travels 90% of the lid opening and the lower lid 8% upward, leaving
2% of the eye height; the upper lid does almost all of a blink's motion."""


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Cubic Hermite step: 0 below ``edge0``, 1 above ``edge1``, 3t² − 2t³ between."""
    t = np.clip((np.asarray(x, dtype=np.float64) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class FaceFrame:
    """A face-normalised frame: ``p = origin + iod · axes @ q`` maps face-frame q to pixels.

    Attributes:
        origin: [3] pixels, midpoint of the two eye centres.
        axes: [3, 3], columns are the frame's x (toward the subject's left eye), y (down the
            face, orthogonal to x) and z (x × y, away from the camera) in pixel axes.
        iod: inter-ocular distance in pixels (3-D, eye-corner midpoints).
    """

    origin: np.ndarray
    axes: np.ndarray
    iod: float

    @staticmethod
    def from_landmarks(landmarks: np.ndarray) -> FaceFrame:
        """Frame of a neutral face, landmarks [478, 3] pixels (z in x's scale)."""
        lm = np.asarray(landmarks, dtype=np.float64)
        right = lm[list(T.RIGHT_EYE_CORNERS)].mean(axis=0)
        left = lm[list(T.LEFT_EYE_CORNERS)].mean(axis=0)
        iod = float(np.linalg.norm(left - right))
        if not np.isfinite(iod) or iod <= 1e-6:
            raise ValueError("degenerate landmarks: the eye centres coincide")
        x = (left - right) / iod
        y = np.array([0.0, 1.0, 0.0]) - x[1] * x
        y /= np.linalg.norm(y)
        z = np.cross(x, y)
        return FaceFrame(origin=(left + right) / 2, axes=np.stack([x, y, z], axis=1), iod=iod)

    def to_face(self, points: np.ndarray) -> np.ndarray:
        """Pixels [..., 3] → face frame [..., 3] (IOD units)."""
        return (np.asarray(points, dtype=np.float64) - self.origin) @ self.axes / self.iod

    def to_pixels(self, q: np.ndarray) -> np.ndarray:
        """Face frame [..., 3] (IOD units) → pixels [..., 3]."""
        return self.origin + self.iod * (np.asarray(q, dtype=np.float64) @ self.axes.T)


def spread(q: np.ndarray, anchors: Mapping[int, np.ndarray], radius: float) -> np.ndarray:
    """Extend displacements given at anchor vertices to the whole mesh.

    Each vertex takes the Shepard (inverse-distance, power 4) blend of the anchor displacements,
    attenuated by exp(−(d/radius)²) with d its 3-D distance to the nearest anchor; anchors keep
    their own displacement exactly.

    Args:
        q: [N, 3] face-frame positions (IOD units).
        anchors: vertex index → displacement [3] (IOD units). Zero displacements pin skin.
        radius: falloff radius in IOD.

    Returns [N, 3] displacements.
    """
    idx = np.fromiter(anchors.keys(), dtype=np.int64)
    disp = np.stack([np.asarray(anchors[i], dtype=np.float64) for i in idx])
    d = np.linalg.norm(q[:, None, :] - q[None, idx, :], axis=-1)
    w = 1.0 / (d * d + 1e-8) ** 2
    out = (w @ disp) / w.sum(axis=1, keepdims=True)
    out *= np.exp(-((d.min(axis=1) / radius) ** 2))[:, None]
    out[idx] = disp
    return out


@dataclass(frozen=True)
class _Mouth:
    """Mouth geometry of a neutral face (face frame): centre x, half-width, mouth-line height."""

    cx: float
    half_width: float
    line_x: np.ndarray
    line_y: np.ndarray

    @staticmethod
    def of(q: np.ndarray) -> _Mouth:
        up = q[list(T.LIPS_INNER_UPPER)]
        lo = q[list(T.LIPS_INNER_LOWER)]
        line_x = (up[:, 0] + lo[:, 0]) / 2
        line_y = (up[:, 1] + lo[:, 1]) / 2
        order = np.argsort(line_x)
        right, left = q[T.MOUTH_CORNER_RIGHT, 0], q[T.MOUTH_CORNER_LEFT, 0]
        return _Mouth(float((left + right) / 2), float((left - right) / 2),
                      line_x[order], line_y[order])

    def below(self, q: np.ndarray) -> np.ndarray:
        """Signed distance below the mouth line (IOD), the line held flat beyond the corners."""
        return q[:, 1] - np.interp(q[:, 0], self.line_x, self.line_y)

    def lateral(self, q: np.ndarray, side: float = 1.0) -> np.ndarray:
        """Position across the mouth: 0 at the centre, 1 at the corner on ``side`` (+1 = subject's
        left), negative toward the other corner."""
        return side * (q[:, 0] - self.cx) / self.half_width


def _lip_contours() -> dict[str, tuple[int, ...]]:
    return {
        "inner_upper": T.LIPS_INNER_UPPER[1:-1],
        "inner_lower": T.LIPS_INNER_LOWER[1:-1],
        "outer_upper": T.LIPS_OUTER_UPPER[1:-1],
        "outer_lower": T.LIPS_OUTER_LOWER[1:-1],
        "corners": (T.MOUTH_CORNER_RIGHT, T.MOUTH_CORNER_LEFT,
                    T.INNER_CORNER_RIGHT, T.INNER_CORNER_LEFT),
    }


def _eye_pins() -> dict[int, np.ndarray]:
    ids = set(T.RIGHT_EYE_UPPER + T.RIGHT_EYE_LOWER + T.LEFT_EYE_UPPER + T.LEFT_EYE_LOWER)
    return {i: np.zeros(3) for i in ids}


def _nose_pins() -> dict[int, np.ndarray]:
    return {i: np.zeros(3) for i in (T.NOSE_TIP, 4, 5, 195, 197, 6, 168)}


def jaw_weight(q: np.ndarray, mouth: _Mouth) -> np.ndarray:
    """How much each vertex follows the mandible, [N] in [0, 1].

    Within the mouth's width the split is sharp along the mouth line (upper lip 0; lower lip 1
    at the midline tapering to 0.55 near the corners; the lip contours are assigned
    explicitly), softening toward and beyond the corners so cheeks and the jaw line stretch
    smoothly; the chin and lower jaw outline are 1, the upper
    face 0.
    """
    s = mouth.below(q)
    lat = np.abs(mouth.lateral(q))
    width = 0.012 + 0.25 * smoothstep(0.7, 1.6, lat)
    w = smoothstep(-width, width, s)
    for ids in (T.LIPS_INNER_LOWER[1:-1], T.LIPS_OUTER_LOWER[1:-1]):
        # the lower lip is carried fully at the midline and about half at the corners, so the
        # opening is an oval rather than a box
        lip_lat = np.abs(mouth.lateral(q[list(ids)]))
        w[list(ids)] = 1.0 - 0.45 * smoothstep(0.25, 1.0, lip_lat)
    w[list(T.LIPS_INNER_UPPER[1:-1])] = 0.0
    w[list(T.LIPS_OUTER_UPPER[1:-1])] = 0.0
    w[T.N_MESH:] = 0.0  # irises never follow the jaw
    return w


def field_jaw_open(q: np.ndarray, mouth: _Mouth) -> np.ndarray:
    """jawOpen: the mandible rotates about the temporomandibular joints and glides down.

    Moves: lower lip, chin and lower jaw outline fully; cheeks and the jaw line toward the ears
    partly (``jaw_weight``); upper lip and everything above stay. Mouth opening is a hinge
    rotation of the condyles followed by their translation down the articular eminence: here a
    rotation in the face's sagittal (y, z) plane about a pivot at the ears' depth, 0.15 IOD below
    their landmarks (234/454, near the tragus), plus a translation of ``JAW_GLIDE_IOD`` down. The
    angle is chosen so the inner lower lip (vertex 14) drops ``JAW_DROP_IOD`` (0.55 IOD ≈ 35 mm)
    in all; for a typical face that is about 25° of rotation (the clinical range of condylar
    rotation is 20–30°), and the chin also swings back.
    """
    ears = q[[234, 454]].mean(axis=0)
    pivot = np.array([0.0, ears[1] + 0.15, ears[2]])
    v = q[T.LIP_LOWER_INNER_MID] - pivot
    a, b = v[1], -v[2]
    r, phi = np.hypot(a, b), np.arctan2(b, a)
    target = a + JAW_DROP_IOD - JAW_GLIDE_IOD
    if target > r:  # degenerate geometry: rotate as far as the hinge allows, glide the rest
        theta, glide = phi, JAW_DROP_IOD - (r - a)
    else:
        theta, glide = phi - np.arccos(target / r), JAW_GLIDE_IOD
    c, s = np.cos(theta), np.sin(theta)
    rel = q - pivot
    moved = rel.copy()
    moved[:, 1] = c * rel[:, 1] - s * rel[:, 2] + glide
    moved[:, 2] = s * rel[:, 1] + c * rel[:, 2]
    return jaw_weight(q, mouth)[:, None] * (moved - rel)


def _closure_from_gap(q: np.ndarray, gap: dict[int, np.ndarray]) -> np.ndarray:
    """Displacement that closes given per-pair gaps: upper inner lip moves its share of the gap
    down, lower inner lip the rest up; outer contours follow their lip at 80%; skin within
    0.12 IOD follows."""
    anchors: dict[int, np.ndarray] = {}
    for (u, lo), (ou, olo) in zip(
        T.INNER_LIP_PAIRS, T.pairs(T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER)
    ):
        g = gap[u]
        anchors[u] = LIP_CLOSE_UPPER_SHARE * g
        anchors[lo] = -(1.0 - LIP_CLOSE_UPPER_SHARE) * g
        anchors[ou] = 0.8 * anchors[u]
        anchors[olo] = 0.8 * anchors[lo]
    for i in _lip_contours()["corners"]:
        anchors[i] = np.zeros(3)
    anchors.update({i: np.zeros(3) for i in (T.CHIN, T.NOSE_TIP)})
    return spread(q, anchors, radius=0.12)


def closure_fields(q: np.ndarray, jaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mouthClose / mouthPress closure: fields C0 (closes the neutral gap) and C1 (per unit of
    jawOpen, closes the gap the jaw opened), each [N, 3].

    Moves: inner lip contours toward each other (upper ``LIP_CLOSE_UPPER_SHARE`` of the gap),
    outer contours at 80% of their inner neighbour, nearby skin. With closure s = 1 the inner
    lips meet exactly, whatever jawOpen is.
    """
    gap0 = {u: q[lo] - q[u] for u, lo in T.INNER_LIP_PAIRS}
    gap1 = {u: jaw[lo] - jaw[u] for u, lo in T.INNER_LIP_PAIRS}
    return _closure_from_gap(q, gap0), _closure_from_gap(q, gap1)


def press_weights(q: np.ndarray, mouth: _Mouth) -> tuple[np.ndarray, np.ndarray]:
    """λ_L, λ_R [N]: how much mouthPressLeft / Right close each part of the lips (sum 1)."""
    lam_left = smoothstep(-0.6, 0.6, mouth.lateral(q, +1.0))
    return lam_left, 1.0 - lam_left


def field_funnel(q: np.ndarray, mouth: _Mouth) -> np.ndarray:
    """mouthFunnel: lips round into an open funnel.

    Moves: every lip contour 20% toward the mouth centre (corners ≈ 0.1 IOD inward); inner upper
    lip up 0.07 IOD and inner lower lip down 0.09 IOD at the midline (tapering to 30% at the
    corners), outer contours half that; lips forward 0.08 IOD. Skin within 0.2 IOD follows.
    Proportions from the rounded open vowel/approximant shapes (/ʊ/, /ɔ/, /w/) in published
    viseme references (e.g. the Oculus Lipsync viseme reference images).
    """
    c = _lip_contours()
    anchors: dict[int, np.ndarray] = {}
    for group, dy in (("inner_upper", -0.07), ("inner_lower", 0.09),
                      ("outer_upper", -0.035), ("outer_lower", 0.045), ("corners", 0.0)):
        for i in c[group]:
            lat = abs(mouth.lateral(q[i:i + 1])[0])
            taper = 1.0 - 0.7 * min(lat, 1.0) ** 2
            anchors[i] = np.array([-0.2 * (q[i, 0] - mouth.cx), dy * taper, -0.08 * taper])
    anchors.update(_nose_pins())
    return spread(q, anchors, radius=0.2)


def field_pucker(q: np.ndarray, mouth: _Mouth) -> np.ndarray:
    """mouthPucker: lips purse forward, as in /u/ or a kiss.

    Moves: every lip contour 35% toward the mouth centre (corners ≈ 0.18 IOD inward); lips
    forward 0.15 IOD at the midline; outer contours bulge 0.03 IOD away from the mouth line;
    inner contours stay together. Skin within 0.25 IOD follows (the orbicularis oris pulls the
    perioral skin in).
    """
    c = _lip_contours()
    anchors: dict[int, np.ndarray] = {}
    for group, dy in (("inner_upper", 0.0), ("inner_lower", 0.0),
                      ("outer_upper", -0.03), ("outer_lower", 0.03), ("corners", 0.0)):
        for i in c[group]:
            lat = abs(mouth.lateral(q[i:i + 1])[0])
            anchors[i] = np.array([-0.35 * (q[i, 0] - mouth.cx), dy,
                                   -0.15 * (1.0 - 0.5 * min(lat, 1.0))])
    anchors.update(_nose_pins())
    return spread(q, anchors, radius=0.25)


def _side_field(q: np.ndarray, mouth: _Mouth, side: float, corner: np.ndarray,
                upper: np.ndarray, lower: np.ndarray, radius: float) -> np.ndarray:
    """Corner-driven field on one side: the mouth corners on ``side`` move by ``corner`` (x in
    the side's outward direction), upper/lower contours by ``upper``/``lower`` scaled by
    smoothstep of their lateral position (0 at the far side's quarter, 1 at the corner)."""
    c = _lip_contours()
    sgn = np.array([side, 1.0, 1.0])
    anchors: dict[int, np.ndarray] = {}
    for group, vec in (("inner_upper", upper), ("outer_upper", upper),
                       ("inner_lower", lower), ("outer_lower", lower)):
        for i in c[group]:
            w = float(smoothstep(-0.25, 1.0, mouth.lateral(q[i:i + 1], side))[0])
            anchors[i] = vec * sgn * w
    near = (T.MOUTH_CORNER_LEFT, T.INNER_CORNER_LEFT) if side > 0 else (
        T.MOUTH_CORNER_RIGHT, T.INNER_CORNER_RIGHT)
    far = (T.MOUTH_CORNER_RIGHT, T.INNER_CORNER_RIGHT) if side > 0 else (
        T.MOUTH_CORNER_LEFT, T.INNER_CORNER_LEFT)
    for i in near:
        anchors[i] = corner * sgn
    for i in far:
        anchors[i] = np.zeros(3)
    anchors.update(_nose_pins())
    anchors.update(_eye_pins())
    return spread(q, anchors, radius=radius)


def field_smile(q: np.ndarray, mouth: _Mouth, side: float) -> np.ndarray:
    """mouthSmileLeft/Right (side +1/−1): zygomaticus major pulls the corner up and out.

    Moves: that mouth corner 0.11 IOD outward, 0.10 IOD up, 0.03 IOD back; the lip contours of
    that side follow (upper lip 0.08 out / 0.06 up, lower 0.08 out / 0.07 up at the corner,
    fading toward the other side); cheek skin within 0.35 IOD rises (nasolabial fold). Corner
    excursion of a broad smile, ~7 mm up and out, as in FACS AU12 descriptions.
    """
    return _side_field(q, mouth, side, corner=np.array([0.11, -0.10, 0.03]),
                       upper=np.array([0.08, -0.06, 0.02]),
                       lower=np.array([0.08, -0.07, 0.02]), radius=0.35)


def field_stretch(q: np.ndarray, mouth: _Mouth, side: float) -> np.ndarray:
    """mouthStretchLeft/Right: risorius/platysma pull the corner sideways and down.

    Moves: that corner 0.12 IOD outward and 0.05 IOD down; lower lip of that side 0.10 out and
    0.06 down, upper lip 0.09 out and 0.01 down (the lips flatten and thin, FACS AU20); skin
    within 0.3 IOD follows.
    """
    return _side_field(q, mouth, side, corner=np.array([0.12, 0.05, 0.0]),
                       upper=np.array([0.09, 0.01, 0.0]),
                       lower=np.array([0.10, 0.06, 0.0]), radius=0.3)


def _lip_bump(q: np.ndarray, mouth: _Mouth, ids: tuple[int, ...], side: float,
              dy: float) -> dict[int, np.ndarray]:
    anchors = {}
    for i in ids:
        u = float(mouth.lateral(q[i:i + 1], side)[0])
        anchors[i] = np.array([0.0, dy * np.exp(-(((u - 0.45) / 0.4) ** 2)), 0.0])
    return anchors


def field_upper_up(q: np.ndarray, mouth: _Mouth, side: float) -> np.ndarray:
    """mouthUpperUpLeft/Right: levator labii superioris raises the upper lip on one side.

    Moves: inner and outer upper-lip contours up by 0.09 IOD at their peak, 45% of the way from
    the midline to that corner (Gaussian profile, σ 0.4 half-widths), showing the upper teeth
    (FACS AU10); corners stay; skin within 0.2 IOD (toward the nostril wing) follows.
    """
    c = _lip_contours()
    anchors = _lip_bump(q, mouth, c["inner_upper"] + c["outer_upper"], side, -0.09)
    anchors.update({i: np.zeros(3) for i in c["corners"]})
    anchors.update({i: np.zeros(3) for i in c["inner_lower"] + c["outer_lower"]})
    anchors.update(_nose_pins())
    return spread(q, anchors, radius=0.2)


def field_lower_down(q: np.ndarray, mouth: _Mouth, side: float) -> np.ndarray:
    """mouthLowerDownLeft/Right: depressor labii inferioris lowers the lower lip on one side.

    Moves: inner and outer lower-lip contours down by 0.09 IOD at their peak, 45% of the way
    toward that corner (as ``field_upper_up``), showing the lower teeth (FACS AU16); corners
    and the upper lip stay; skin within 0.2 IOD follows.
    """
    c = _lip_contours()
    anchors = _lip_bump(q, mouth, c["inner_lower"] + c["outer_lower"], side, 0.09)
    anchors.update({i: np.zeros(3) for i in c["corners"]})
    anchors.update({i: np.zeros(3) for i in c["inner_upper"] + c["outer_upper"]})
    anchors[T.CHIN] = np.zeros(3)
    return spread(q, anchors, radius=0.2)


def field_press(q: np.ndarray, mouth: _Mouth, side: float) -> np.ndarray:
    """mouthPressLeft/Right, linear part: the lips press and thin on one side.

    Moves: each outer-lip contour point 35% of the way toward its inner-contour partner (the
    red of the lips narrows, FACS AU24), weighted by λ of that side (``press_weights``); skin
    within 0.1 IOD follows. The closing of any gap is the closure term (``closure_fields``).
    """
    lam = press_weights(q, mouth)[0 if side > 0 else 1]
    anchors: dict[int, np.ndarray] = {}
    for outer, inner in ((T.LIPS_OUTER_UPPER, T.LIPS_INNER_UPPER),
                         (T.LIPS_OUTER_LOWER, T.LIPS_INNER_LOWER)):
        for o, i in zip(outer[1:-1], inner[1:-1]):
            anchors[o] = 0.35 * lam[o] * (q[i] - q[o])
            anchors[i] = np.zeros(3)
    return spread(q, anchors, radius=0.1)


def field_blink(q: np.ndarray, side: float) -> np.ndarray:
    """eyeBlinkLeft/Right: the upper lid closes over the eye.

    Moves: each upper-lid contour point ``BLINK_UPPER_SHARE`` (90%) of the way to its lower-lid
    partner, each lower-lid point ``BLINK_LOWER_SHARE`` (8%) up; eye corners stay; the lid fold
    above follows (skin within 0.15 IOD); the iris points stay (the lid covers them).
    """
    upper, lower = (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER) if side > 0 else (
        T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER)
    anchors: dict[int, np.ndarray] = {}
    for u, lo in T.pairs(upper, lower):
        gap = q[lo] - q[u]
        anchors[u] = BLINK_UPPER_SHARE * gap
        anchors[lo] = -BLINK_LOWER_SHARE * gap
    anchors[upper[0]] = np.zeros(3)
    anchors[upper[-1]] = np.zeros(3)
    field = spread(q, anchors, radius=0.15)
    field[T.N_MESH:] = 0.0
    return field


def field_brow(q: np.ndarray, inner: bool, side: float | None) -> np.ndarray:
    """browInnerUp (both sides) and browOuterUpLeft/Right: the frontalis raises the brows.

    Moves: brow contour points up by 0.12 IOD at the raised end (inner end for browInnerUp,
    FACS AU1; outer end for browOuterUp, AU2), falling linearly to 20% at the other end;
    forehead skin within 0.35 IOD follows; the eye contours are pinned.
    """
    anchors: dict[int, np.ndarray] = {}
    brows = []
    if side is None or side < 0:
        brows += [T.RIGHT_BROW_UPPER, T.RIGHT_BROW_LOWER]
    if side is None or side > 0:
        brows += [T.LEFT_BROW_UPPER, T.LEFT_BROW_LOWER]
    for brow in brows:  # ordered outer → inner
        n = len(brow)
        for k, i in enumerate(brow):
            t = k / (n - 1)
            w = 0.2 + 0.8 * (t if inner else 1.0 - t)
            anchors[i] = np.array([0.0, -0.12 * w, 0.0])
    anchors.update(_eye_pins())
    return spread(q, anchors, radius=0.35)


def basis_fields(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All fields of a neutral face in the face frame.

    Args:
        q: [478, 3] neutral landmarks in the face frame (IOD units).

    Returns:
        basis: [K, 478, 3] linear fields in ``COEFFICIENTS`` order (mouthClose's is zero: it
            acts only through closure).
        closure: [2, 478, 3] C0 and C1 (see ``closure_fields``).
        press: [2, 478] λ_L, λ_R.
        head_centre: [3] face-frame centre of head rotation.
    """
    mouth = _Mouth.of(q)
    fields = {
        "jawOpen": field_jaw_open(q, mouth),
        "mouthClose": np.zeros_like(q),
        "mouthFunnel": field_funnel(q, mouth),
        "mouthPucker": field_pucker(q, mouth),
        "browInnerUp": field_brow(q, inner=True, side=None),
    }
    for name, side in (("Left", 1.0), ("Right", -1.0)):
        fields[f"mouthSmile{name}"] = field_smile(q, mouth, side)
        fields[f"mouthStretch{name}"] = field_stretch(q, mouth, side)
        fields[f"mouthUpperUp{name}"] = field_upper_up(q, mouth, side)
        fields[f"mouthLowerDown{name}"] = field_lower_down(q, mouth, side)
        fields[f"mouthPress{name}"] = field_press(q, mouth, side)
        fields[f"eyeBlink{name}"] = field_blink(q, side)
        fields[f"browOuterUp{name}"] = field_brow(q, inner=False, side=side)
    basis = np.stack([fields[name] for name in COEFFICIENTS])
    c0, c1 = closure_fields(q, fields["jawOpen"])
    lam_left, lam_right = press_weights(q, mouth)
    ears = q[[234, 454]].mean(axis=0)
    head_centre = np.array([0.0, ears[1] + 0.25, ears[2]])
    return basis, np.stack([c0, c1]), np.stack([lam_left, lam_right]), head_centre


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """R = Rz(roll) · Ry(yaw) · Rx(pitch) for angles [B, 3] (pitch, yaw, roll) in radians.

    Axes are the face frame's (x left-eye-ward, y down, z away from the camera); signs are
    chosen so positive pitch looks down, positive yaw turns toward the subject's left, positive
    roll is clockwise on screen. Returns [B, 3, 3].
    """
    a = np.asarray(angles, dtype=np.float64)
    cp, sp = np.cos(a[:, 0]), np.sin(a[:, 0])
    cy, sy = np.cos(a[:, 1]), np.sin(a[:, 1])
    cr, sr = np.cos(a[:, 2]), np.sin(a[:, 2])
    one, zero = np.ones_like(cp), np.zeros_like(cp)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, -sy, zero, one, zero, sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


@dataclass(frozen=True)
class Rig:
    """A rig bound to one neutral face in one pixel frame (usually the avatar's render crop).

    Build with ``Rig.for_avatar`` or ``Rig.from_landmarks``. Evaluation is vectorised over a
    batch and costs two small einsums; it is deterministic and has no state.

    Attributes:
        neutral: float64 [478, 3] neutral landmarks in the output pixel frame.
        frame: the face frame of ``neutral``.
        q0: float64 [478, 3] neutral in the face frame.
        basis: [K, 478, 3]; closure: [2, 478, 3]; press: [2, 478]; head_centre: [3].
        size: side of the output frame in pixels (``tx``, ``ty`` are fractions of it).
    """

    neutral: np.ndarray
    frame: FaceFrame
    q0: np.ndarray
    basis: np.ndarray
    closure: np.ndarray
    press: np.ndarray
    head_centre: np.ndarray
    size: float

    @staticmethod
    def from_landmarks(neutral: np.ndarray, size: float) -> Rig:
        """Rig of a neutral face given as [478, 3] pixels (z in x's scale) of a frame whose side
        is ``size`` pixels. Raises ``ValueError`` for a wrong shape or non-finite values."""
        lm = np.asarray(neutral, dtype=np.float64)
        if lm.shape != (T.N_LANDMARKS, 3) or not np.isfinite(lm).all():
            raise ValueError(f"neutral landmarks must be finite [478, 3], got {list(lm.shape)}")
        frame = FaceFrame.from_landmarks(lm)
        q0 = frame.to_face(lm)
        basis, closure, press, head_centre = basis_fields(q0)
        return Rig(lm, frame, q0, basis, closure, press, head_centre, float(size))

    @staticmethod
    def for_avatar(avatar: Avatar, size: int = 256) -> Rig:
        """Rig in pixels of the avatar's render crop resampled to ``size`` × ``size``."""
        return Rig.from_landmarks(avatar.crop_landmarks(size), size)

    @property
    def iod(self) -> float:
        """Inter-ocular distance of the neutral in output pixels."""
        return self.frame.iod

    def expression(self, coeffs: np.ndarray) -> np.ndarray:
        """Face-frame shape for coefficients [B, K] (``COEFFICIENTS`` order, nominally [0, 1]).

        Returns float64 [B, 478, 3] in IOD units.
        """
        c = np.asarray(coeffs, dtype=np.float64)
        q = self.q0 + np.einsum("bk,knd->bnd", c, self.basis)
        s = (c[:, INDEX["mouthClose"], None]
             + c[:, INDEX["mouthPressLeft"], None] * self.press[0]
             + c[:, INDEX["mouthPressRight"], None] * self.press[1])
        s = np.clip(s, 0.0, 1.0)
        jaw = c[:, INDEX["jawOpen"], None, None]
        return q + s[:, :, None] * (self.closure[0] + jaw * self.closure[1])

    def keypoints3d(self, coeffs: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Posed 3-D keypoints: coeffs [B, K], pose [B, 6] (``POSE_NAMES``) → float64 [B, 478, 3]
        in output pixels (z in x's scale, before projection)."""
        c = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
        p = np.atleast_2d(np.asarray(pose, dtype=np.float64))
        if c.shape[1:] != (N_COEFFICIENTS,) or p.shape[1:] != (6,) or len(c) != len(p):
            raise ValueError(
                f"expected coeffs [B, {N_COEFFICIENTS}] and pose [B, 6], "
                f"got {list(c.shape)} and {list(p.shape)}"
            )
        q = self.expression(c)
        rot = rotation_matrices(p[:, :3])
        h = self.head_centre
        q = h + p[:, 5, None, None] * np.einsum("bij,bnj->bni", rot, q - h)
        out = self.frame.to_pixels(q)
        out[..., 0] += p[:, 3, None] * self.size
        out[..., 1] += p[:, 4, None] * self.size
        return out

    def keypoints(self, coeffs: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Driving keypoints for the renderer: coeffs [B, K], pose [B, 6] → float32 [B, 478, 2]
        (x, y) pixels of the output frame. Zero coefficients with ``NEUTRAL_POSE`` give the
        neutral landmarks' x, y exactly."""
        return self.keypoints3d(coeffs, pose)[..., :2].astype(np.float32)


def coefficients_from_mapping(values: Mapping[str, float]) -> np.ndarray:
    """A motion frame's named coefficients → float64 [K] in ``COEFFICIENTS`` order.

    Accepts ARKit names and the side-less aliases of ``SYMMETRIC_ALIASES`` (which set both
    sides); missing names are 0; values are clipped to [0, 1]. Unknown names raise ``KeyError``
    naming them; non-finite values raise ``ValueError``.
    """
    out = np.zeros(N_COEFFICIENTS)
    unknown = [k for k in values if k not in INDEX and k not in SYMMETRIC_ALIASES]
    if unknown:
        raise KeyError(f"unknown expression coefficient(s): {', '.join(sorted(unknown))}")
    for key, value in values.items():
        v = float(value)
        if not np.isfinite(v):
            raise ValueError(f"coefficient {key} is not finite: {value!r}")
        for name in SYMMETRIC_ALIASES.get(key, (key,)):
            out[INDEX[name]] = min(max(v, 0.0), 1.0)
    return out


def pose_vector(pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0, tx: float = 0.0,
                ty: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Head pose as the [6] vector the rig takes (radians, crop fractions, factor)."""
    return np.array([pitch, yaw, roll, tx, ty, scale], dtype=np.float64)


def in_domain(coeffs: np.ndarray) -> np.ndarray:
    """[B] bool: where the closure term is unsaturated, so the rig is exactly invertible."""
    c = np.atleast_2d(coeffs)
    press = np.maximum(c[:, INDEX["mouthPressLeft"]], c[:, INDEX["mouthPressRight"]])
    return c[:, INDEX["mouthClose"]] + press <= 1.0


# --- lip gap: the one measure of mouth opening ------------------------------------------------
# Every lip gap is taken over the central inner-lip pairs 82/87, 13/14, 312/317
# (``avatars.topology.CENTRAL_INNER_LIP_PAIRS``), as the largest of the three.
_GAP_UPPER = [u for u, _ in T.CENTRAL_INNER_LIP_PAIRS]
_GAP_LOWER = [lo for _, lo in T.CENTRAL_INNER_LIP_PAIRS]


def inner_lip_gap(keypoints: np.ndarray) -> np.ndarray:
    """Inner-lip gap in pixels, as an image shows it: the largest (x, y) distance of the central
    inner-lip pairs of keypoints float [B, 478, 2|3]. Returns float64 [B] (≥ 0)."""
    kp = np.atleast_3d(np.asarray(keypoints, dtype=np.float64))[..., :2]
    return np.linalg.norm(kp[:, _GAP_LOWER] - kp[:, _GAP_UPPER], axis=-1).max(axis=1)


def inner_lip_gap_iod(landmarks: np.ndarray) -> np.ndarray:
    """``inner_lip_gap`` of tracked landmarks float [B, 478, 2|3] in each face's own
    inter-ocular distance (``avatars.bundle.inter_ocular_distance`` of the same landmarks, so
    2-D landmarks give a 2-D IOD). Returns float64 [B]; NaN where the IOD is 0."""
    lm = np.atleast_3d(np.asarray(landmarks, dtype=np.float64))
    iod = np.array([inter_ocular_distance(f) for f in lm])
    gap = inner_lip_gap(lm)
    return np.divide(gap, iod, out=np.full_like(gap, np.nan), where=iod > 0.0)


def expression_lip_gap(rig: Rig, coeffs: np.ndarray) -> np.ndarray:
    """The lip gap ``rig``'s face has at coefficients float [K] or [B, K], in the rig's IODs,
    pose-free (face frame, ``Rig.expression``): the largest lower-minus-upper y of the central
    inner-lip pairs, signed (negative when the lips overlap). Returns float64 [] or [B]."""
    c = np.asarray(coeffs, dtype=np.float64)
    q = rig.expression(np.atleast_2d(c))
    gap = (q[:, _GAP_LOWER, 1] - q[:, _GAP_UPPER, 1]).max(axis=1)
    return gap if c.ndim == 2 else gap[0]


_CLOSE_GRID = np.linspace(0.0, 1.0, 21)


def closure_for_gap(rig: Rig, coeffs: np.ndarray, gap_iod: float) -> float:
    """The mouthClose in [0, 1] that gives ``rig``'s face (other coefficients as ``coeffs``
    float [K]) an ``expression_lip_gap`` of ``gap_iod`` IODs: the gap is evaluated on a grid of
    21 values and inverted by linear interpolation (it falls monotonically with mouthClose;
    exact where the closure is unsaturated). A gap the face cannot reach gives 0 (wider) or 1."""
    batch = np.repeat(np.asarray(coeffs, dtype=np.float64)[None], len(_CLOSE_GRID), axis=0)
    batch[:, INDEX["mouthClose"]] = _CLOSE_GRID
    gaps = expression_lip_gap(rig, batch)  # decreasing in mouthClose
    if gap_iod >= gaps[0]:
        return 0.0
    if gap_iod <= gaps[-1]:
        return 1.0
    return float(np.interp(-gap_iod, -gaps, _CLOSE_GRID))


def eyelid_gaps(keypoints: np.ndarray, side: float) -> np.ndarray:
    """Upper-to-lower lid distances [B, 7] in pixels for the eye on ``side`` (+1 left)."""
    kp = np.atleast_3d(np.asarray(keypoints, dtype=np.float64))[..., :2]
    prs = T.LEFT_EYELID_PAIRS if side > 0 else T.RIGHT_EYELID_PAIRS
    return np.linalg.norm(kp[:, [lo for _, lo in prs]] - kp[:, [u for u, _ in prs]], axis=-1)
