"""The procedural teacher renderer: an exact piecewise-affine warp plus a drawn mouth interior.

The teacher is the reference the neural renderer (``engines.training.renderer_model``) is trained on and
judged against (``facecast eval renderer`` reports both). It is slow-ish (numpy + OpenCV, a few
milliseconds per 256² frame) and exact:

* **Warp.** The source keypoints (468 Face Mesh vertices; the 10 iris points are left out so lids
  can close over them) plus fixed anchors on the crop border are triangulated once per source
  (Delaunay, SciPy). Every driving triangle maps affinely back to its source triangle; each output
  pixel centre takes the affine map of the front-facing driving triangle it lies in (where triangles
  fold over under head yaw, the front-facing ones win), and the source is resampled there
  (``cv2.remap``, bilinear). Outside the face the border anchors do not move, so the background
  stretches smoothly and the crop edge is the source's.
* **Mouth interior.** Inside the driving inner-lip polygon (``LIPS_INNER_UPPER`` +
  ``LIPS_INNER_LOWER``) a mouth is drawn from the keypoints alone: a dark cavity; an upper tooth
  row below the upper inner lip across the front of the arch only (incisors to canines, fading
  into the dark corners), with thin gaps between the teeth and the lip's shadow at their root; a
  lower row rising from behind the lower inner lip (so it moves with the jaw) at wide openings
  only; and a tongue behind the lower teeth. It is blended in by how much wider the
  driving mouth is than the source's (``OPEN_RAMP_IOD``), so the neutral pose gives back the
  source exactly and a source that already shows teeth keeps them for small openings.

Coordinates: keypoints are continuous pixel coordinates of the crop, with pixel (row i, col j)
covering [j, j+1) × [i, i+1) (mediapipe's convention: normalised × size). Flows below use the same
convention: ``flow[i, j] = (u, v)`` is the source point whose colour lands on pixel centre
(j + 0.5, i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from avatars import topology as T
from avatars.bundle import inter_ocular_distance
from avatars.rig import inner_lip_gap

BORDER_ANCHORS_PER_SIDE = 8
"""Fixed anchors per crop side (corners included once) that pin the crop border."""

OPEN_RAMP_IOD = (0.02, 0.10)
"""Inner-lip gap growth over the source's (IOD units) over which the drawn mouth fades in."""

SUPERSAMPLE = 4
"""Supersampling factor for the drawn mouth (anti-aliased edges)."""

# Mouth palette (sRGB in [0, 1], blended straight into the crop); chosen by eye against real mouth
# photographs, then darkened (2026-12) after mediapipe on teacher renders read the interior at
# 0.52–0.68 of cheek luma on held-out grace_hopper where real speakers measure 0.04–0.08
# (issue 17): the cavity was too light and the teeth filled the opening.
CAVITY_EDGE = np.array([0.17, 0.05, 0.055])
CAVITY_DEEP = np.array([0.03, 0.008, 0.012])
TEETH_UPPER = np.array([0.93, 0.88, 0.78])
TEETH_LOWER = np.array([0.80, 0.75, 0.66])
TEETH_GAP = np.array([0.36, 0.27, 0.24])
TONGUE = np.array([0.50, 0.22, 0.24])

UPPER_TEETH_IOD = 0.11
"""Most visible height of the upper incisors below the upper inner lip, IOD units (an adult
central incisor crown is about 10 mm, IOD about 63 mm: ~0.16; the lip covers part)."""
LOWER_TEETH_IOD = 0.06
"""Most visible height of the lower incisors above the lower inner lip, IOD units."""
UPPER_TEETH_SHARE = 0.35
"""The upper teeth show at most this share of the opening (inner-lip gap at the centre): in
speech the gap below the incisors' edge is dark (the cavity, the tongue low behind the lower
teeth), so the teeth never fill the mouth."""
LOWER_TEETH_SHARE = 0.15
"""The lower teeth show at most this share of the opening."""
LOWER_TEETH_SHOW_IOD = (0.18, 0.32)
"""Inner-lip gap (IOD units) over which the lower teeth rise from behind the lower lip: in most
speech the lower lip covers them (issue 17: a lower row drawn at every opening made, with the
upper one, a ring of teeth around a dark slit that the student blurred into a grey band)."""
TEETH_HALF_WIDTH_IOD = 0.32
"""Half-width of the visible upper row, IOD units: canine to canine is about 40 mm across the
front of the arch (IOD about 63 mm); beyond it the premolars turn away into shadow."""
TEETH_MOUTH_SHARE = 0.8
"""The upper row covers at most this share of the inner mouth's half-width (the dark buccal
corridor at the corners)."""
LOWER_TEETH_WIDTH_SHARE = 0.7
"""Half-width of the lower row relative to the upper (lower incisors are narrower)."""
TOOTH_EDGES_IOD = (0.0, 0.13, 0.23, 0.31)
"""Boundaries between teeth from the midline, IOD units, upper row: central incisor 8.5 mm,
lateral 6.5 mm, canine foreshortened by the arch's curve (IOD 63 mm)."""
TEETH_ARC = 0.35
"""How far the incisal edge curves back towards its lip at the row's half-width, as a share of
the row's height (the arch seen from the front)."""
TOOTH_GAP_WIDTH_IOD = 0.01
"""Width of the drawn gap between neighbouring teeth, IOD units."""
TOOTH_GAP_SHADE = 0.55
"""How far a gap line darkens the tooth toward ``TEETH_GAP`` (1: fully)."""
TONGUE_SHADE = 0.55
"""The tongue's brightness at its middle relative to ``TONGUE``: it sits back in the cavity's
shadow."""
TONGUE_RISE_IOD = 0.01
"""Centre of the tongue's ellipse relative to the lower inner lip's middle, IOD units, down
positive: it rests low, half behind the lower lip and teeth (it used to stand 0.05 IOD up and,
0.16 IOD tall, filled the lower half of the opening with a mid-red mediapipe read as a light
interior)."""
TONGUE_HEIGHT_IOD = 0.09
"""Half-height of the tongue's ellipse, IOD units."""

LID_RAMP = (0.3, 0.8)
"""Closure share of an eye (1 − driving lid gap / source lid gap) over which the painted upper lid
fades in. Below it the warp alone moves the lid; above it the lid is painted skin, because a
piecewise-affine warp squeezes the source's iris and sclera into a slit that mediapipe (and a
viewer) read as a half-open eye: on the astronaut and grace_hopper the warped-only teacher showed
26% and 60% of the open eye at eyeBlink = 1 (issue 17)."""
LID_SAMPLE_IOD = (0.04, 0.18)
"""Band above the source's upper lid contour (IOD units, along the face's up direction) whose
colour at the ``LID_SAMPLE_PERCENTILE``-th luma percentile is the painted lid's skin: the visible
upper lid up to the brow, brighter than the crease's shadow, the lashes, brows and glasses."""
LID_SAMPLE_PERCENTILE = 85
"""Luma percentile of the sampled band that gives the lid colour."""
LID_FEATHER_IOD = 0.012
"""Gaussian sigma (IOD units) that softens the painted lid's border into the warped skin."""
LID_SHADE = (0.86, 1.0)
"""Brightness of the painted lid at the lash line and at the top of the covered band (a closed
lid is convex: lit on top, in light shadow toward the lashes)."""
LASH_WIDTH_IOD = 0.055
"""Thickness of the drawn lash line along the closing lid's edge, IOD units. Chosen with
mediapipe on the five held-out portraits (``runtime/evals/portraits.py``) at eyeBlink = 1: lines of
0.007, 0.014, 0.03, 0.035 and 0.055 IOD (centred one width below the edge, ``LASH_DROP``) read as
an eye opening of up to 0.50, 0.41, 0.40, 0.37 and 0.31 of open, and 0.15–0.23 on the faces
without glasses at 0.055 (grace_hopper's heavy frames read highest): the dark fringe of the lashes
is what the landmarker sees of a closed eye. Those five are evaluation faces, so the choice was
checked again on the six training portraits alone (every non-held-out entry of
``runtime/evals/portraits.py``): lines of 0.014, 0.03, 0.04, 0.055, 0.07 and 0.085 IOD read as
an eye opening of at most 0.56, 0.45, 0.32, 0.33, 0.43 and 0.42 of open (means 0.27, 0.21,
0.16, 0.18, 0.21, 0.22; teacher at eyeBlink = 1), so 0.04 and 0.055 tie within mediapipe's
noise there and the value stands (the engraving ``alimehemet`` reads highest)."""
LASH_SHADE = 0.15
"""Lash-line colour as a share of the lid colour."""
LASH_DROP = 1.0
"""How far below the lid's edge the lash line is centred, in lash-line widths."""


@dataclass(frozen=True)
class TeacherFrame:
    """One teacher rendering of a crop of side R.

    Attributes:
        image: float32 [R, R, 3] in [0, 1], RGB.
        flow: float32 [R, R, 2], the source point (u, v) in crop pixels sampled for each pixel.
        alpha: float32 [R, R] in [0, 1], weight of what is drawn rather than warped: the mouth
            interior and the painted upper lids of closing eyes.
    """

    image: np.ndarray
    flow: np.ndarray
    alpha: np.ndarray


def border_anchors(size: int, per_side: int = BORDER_ANCHORS_PER_SIDE) -> np.ndarray:
    """Anchors on the crop border, float64 [4·(per_side − 1), 2] pixels, corners included."""
    t = np.linspace(0.0, float(size), per_side)
    top = np.stack([t[:-1], np.zeros(per_side - 1)], 1)
    right = np.stack([np.full(per_side - 1, float(size)), t[:-1]], 1)
    bottom = np.stack([t[::-1][:-1], np.full(per_side - 1, float(size))], 1)
    left = np.stack([np.zeros(per_side - 1), t[::-1][:-1]], 1)
    return np.concatenate([top, right, bottom, left])


def warp_points(keypoints: np.ndarray, size: int) -> np.ndarray:
    """The warp's control points: 468 mesh keypoints of [478, 2] followed by the border anchors."""
    kp = np.asarray(keypoints, dtype=np.float64)[: T.N_MESH, :2]
    return np.concatenate([kp, border_anchors(size)])


def triangulate(source_keypoints: np.ndarray, size: int) -> np.ndarray:
    """Delaunay triangles [T, 3] (int) over ``warp_points`` of the source keypoints [478, 2]."""
    return Delaunay(warp_points(source_keypoints, size)).simplices.astype(np.int64)


def _signed_area(p: np.ndarray) -> np.ndarray:
    """Twice the signed area of triangles p [T, 3, 2]."""
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def piecewise_affine_flow(source_keypoints: np.ndarray, driving_keypoints: np.ndarray,
                          size: int, triangles: np.ndarray | None = None,
                          driving_depth: np.ndarray | None = None) -> np.ndarray:
    """Backward flow of the piecewise-affine warp that moves source keypoints to driving ones.

    Args:
        source_keypoints, driving_keypoints: [478, 2] crop pixels (float).
        size: crop side R in pixels.
        triangles: [T, 3] from ``triangulate`` (computed when None).
        driving_depth: optional [478] z of the driving keypoints (larger = farther, as in
            ``Rig.keypoints3d``); when given, overlapping triangles are painted far to near.

    Returns:
        float32 [R, R, 2]: for each output pixel centre, the source point (u, v) in crop pixels.
        Where triangles overlap (a fold under head yaw), front-facing ones win. Pixels no
        triangle covers keep the identity (cannot happen inside the hull, the whole crop).
    """
    tri = triangulate(source_keypoints, size) if triangles is None else triangles
    src = warp_points(source_keypoints, size)
    drv = warp_points(driving_keypoints, size)
    ps, pd = src[tri], drv[tri]
    area_s, area_d = _signed_area(ps), _signed_area(pd)
    valid = np.abs(area_d) > 1e-9
    front = (area_s * area_d > 0) & valid
    back = ~front & valid

    index = np.zeros((size, size), np.int32)  # 0 = none, else triangle index + 1
    shift = 4
    scale = float(1 << shift)
    # Folded (back-facing) triangles first so front-facing skin covers them; they only show
    # where nothing else lands (a silhouette turning away), which avoids holes. Triangles that
    # touch the border anchors (background) go before the face; with depth, far before near.
    n_mesh = T.N_MESH
    outside = (tri >= n_mesh).any(axis=1)
    if driving_depth is not None:
        z = np.concatenate([np.asarray(driving_depth, np.float64)[:n_mesh],
                            np.full(len(src) - n_mesh, np.inf)])
        depth = np.where(outside, np.inf, z[np.minimum(tri, len(z) - 1)].mean(axis=1))
    else:
        depth = outside.astype(np.float64)
    order = np.argsort(-depth, kind="stable")
    order = np.concatenate([order[back[order]], order[front[order]]])
    for t in order:
        poly = np.round((pd[t] - 0.5) * scale).astype(np.int32)  # pixel-index coordinates
        cv2.fillConvexPoly(index, poly, int(t) + 1, lineType=cv2.LINE_8, shift=shift)

    # Affine maps driving → source per triangle: [x y 1] @ M = [u v]
    ones = np.ones((len(tri), 3, 1))
    d_h = np.concatenate([pd, ones], axis=2)  # [T, 3, 3]
    m = np.zeros((len(tri), 3, 2))
    m[:, :2, :] = np.eye(2)
    m[valid] = np.linalg.solve(d_h[valid], ps[valid])

    ys, xs = np.mgrid[0:size, 0:size]
    centres = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=np.float64)], -1)
    sel = np.maximum(index - 1, 0)
    flow = np.einsum("hwk,hwkc->hwc", centres, m[sel])
    none = index == 0
    flow[none] = centres[none][:, :2]
    return flow.astype(np.float32)


def remap(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` [H, W, C] (any float/uint8 dtype) at ``flow`` [R, R, 2] continuous
    crop pixels, bilinear, border replicated. Returns float32 [R, R, C] in the image's scale."""
    img = np.asarray(image, dtype=np.float32)
    mx = flow[..., 0] - 0.5
    my = flow[..., 1] - 0.5
    return cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _fill(canvas: np.ndarray, polys: list[np.ndarray], origin: np.ndarray) -> None:
    pts = [np.round((p - origin) * SUPERSAMPLE * 16).astype(np.int32) for p in polys]
    cv2.fillPoly(canvas, pts, 1.0, lineType=cv2.LINE_AA, shift=4)


def _down(canvas: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(canvas, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def mouth_interior(driving_keypoints: np.ndarray, size: int, iod: float) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
    """Draw the mouth interior for driving keypoints [478, 2] (crop pixels) in a crop of side
    ``size``; ``iod`` is the inter-ocular distance in the same pixels.

    Returns (rgb float32 [R, R, 3] in [0, 1], coverage float32 [R, R] in [0, 1]: the driving
    inner-lip polygon, anti-aliased). Everything is a function of the keypoints alone. Drawing
    happens (supersampled) only in the mouth's bounding box.
    """
    kp = np.asarray(driving_keypoints, dtype=np.float64)[:, :2]
    upper = kp[list(T.LIPS_INNER_UPPER)]  # corner → corner (right → left)
    lower = kp[list(T.LIPS_INNER_LOWER)]
    poly = np.concatenate([upper, lower[::-1][1:-1]])
    rgb_full = np.zeros((size, size, 3), np.float32)
    cov_full = np.zeros((size, size), np.float32)
    x0, y0 = np.floor(np.clip(poly.min(0) - 2, 0, size)).astype(int)
    x1, y1 = np.ceil(np.clip(poly.max(0) + 2, 0, size)).astype(int)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return rgb_full, cov_full
    shape = (int(y1 - y0), int(x1 - x0))
    big = (shape[0] * SUPERSAMPLE, shape[1] * SUPERSAMPLE)
    origin = np.array([x0, y0], np.float64)

    mouth = np.zeros(big, np.float32)
    _fill(mouth, [poly], origin)
    coverage = _down(mouth, shape)

    # Cavity: dark red at the lips' edge, near black a little way in.
    centre = poly.mean(axis=0)
    half_w = max(0.5 * np.linalg.norm(upper[-1] - upper[0]), 1e-3)
    gap = max(float(np.linalg.norm(lower[5] - upper[5])), 1e-3)
    half_h = 0.5 * gap
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    r = np.sqrt(((xs - centre[0]) / half_w) ** 2 + ((ys - centre[1]) / (half_h + 0.15 * iod)) ** 2)
    depth = np.clip(2.2 * (1.0 - r), 0.0, 1.0)[..., None]
    rgb = CAVITY_EDGE * (1 - depth) + CAVITY_DEEP * depth

    # Tongue: an ellipse resting above the lower inner lip, behind the lower teeth.
    tongue = np.zeros(big, np.float32)
    c = (lower[5] + np.array([0.0, TONGUE_RISE_IOD * iod]) - origin) * SUPERSAMPLE
    axes = (0.55 * half_w * SUPERSAMPLE, TONGUE_HEIGHT_IOD * iod * SUPERSAMPLE)
    angle = np.degrees(np.arctan2(upper[-1, 1] - upper[0, 1], upper[-1, 0] - upper[0, 0]))
    cv2.ellipse(tongue, (round(c[0] * 16), round(c[1] * 16)),
                (round(axes[0] * 16), round(axes[1] * 16)), angle, 0, 360, 1.0, -1,
                cv2.LINE_AA, 4)
    t_alpha = _down(tongue, shape)[..., None]
    cx = c[0] / SUPERSAMPLE + x0
    shade = TONGUE_SHADE * np.clip(1.0 - 0.6 * np.abs(xs - cx)[..., None] / half_w, 0.4, 1.0)
    rgb = rgb * (1 - t_alpha) + TONGUE * shade * t_alpha

    # Teeth: an upper row hanging from the upper inner lip and, at wide openings only, a lower row
    # standing on the lower inner lip, both only across the front of the dental arch.
    frame = _MouthFrame.of(upper, lower)
    coords = frame.coords(np.stack([xs, ys], -1))
    upper_row = _upper_row(frame, gap, iod)
    for row in (upper_row, _lower_row(upper_row, gap, iod)):
        if row is not None:
            t_alpha, tooth = _teeth(frame, coords, row, rgb, iod)
            rgb = rgb * (1 - t_alpha) + tooth * t_alpha
    rgb_full[y0:y1, x0:x1] = rgb
    cov_full[y0:y1, x0:x1] = np.clip(coverage, 0.0, 1.0)
    return rgb_full, cov_full


@dataclass(frozen=True)
class _MouthFrame:
    """The mouth's own axes in crop pixels: origin at the upper inner lip's middle (vertex 13),
    ``along`` from the right inner corner to the left, ``down`` face-down; with each inner-lip
    contour as t (down) over s (along), for interpolation."""

    origin: np.ndarray
    along: np.ndarray
    down: np.ndarray
    upper_st: np.ndarray
    lower_st: np.ndarray

    @staticmethod
    def of(upper: np.ndarray, lower: np.ndarray) -> _MouthFrame:
        origin = upper[5]
        along = (upper[-1] - upper[0]) / max(float(np.linalg.norm(upper[-1] - upper[0])), 1e-6)
        down = np.array([-along[1], along[0]])
        basis = np.stack([along, down], 1)
        return _MouthFrame(origin, along, down, (upper - origin) @ basis, (lower - origin) @ basis)

    def coords(self, points: np.ndarray) -> np.ndarray:
        """(s, t) [..., 2] of crop pixels ``points`` [..., 2]."""
        return (points - self.origin) @ np.stack([self.along, self.down], 1)

    def contour_t(self, s: np.ndarray, lower: bool) -> np.ndarray:
        """t of the upper (or lower) inner lip at along-coordinates ``s``."""
        st = self.lower_st if lower else self.upper_st
        order = np.argsort(st[:, 0])
        return np.interp(s, st[order, 0], st[order, 1])


@dataclass(frozen=True)
class _TeethRow:
    height: float
    half_width: float
    colour: np.ndarray
    lower: bool


def _upper_row(frame: _MouthFrame, gap: float, iod: float) -> _TeethRow | None:
    """The upper incisors to canines: ``UPPER_TEETH_IOD`` tall, at most ``UPPER_TEETH_SHARE`` of
    the opening, across ``TEETH_HALF_WIDTH_IOD`` (and at most ``TEETH_MOUTH_SHARE`` of the mouth's
    half-width)."""
    half_mouth = 0.5 * abs(frame.upper_st[-1, 0] - frame.upper_st[0, 0])
    height = min(UPPER_TEETH_IOD * iod, UPPER_TEETH_SHARE * gap)
    width = min(TEETH_HALF_WIDTH_IOD * iod, TEETH_MOUTH_SHARE * half_mouth)
    return _TeethRow(height, width, TEETH_UPPER, False) if height > 0.3 else None


def _lower_row(upper: _TeethRow | None, gap: float, iod: float) -> _TeethRow | None:
    """The lower incisors: hidden by the lower lip until the opening passes
    ``LOWER_TEETH_SHOW_IOD``, then rising to ``LOWER_TEETH_IOD`` (at most ``LOWER_TEETH_SHARE`` of
    the opening); narrower than the ``upper`` row (``LOWER_TEETH_WIDTH_SHARE``)."""
    lo, hi = LOWER_TEETH_SHOW_IOD
    show = float(np.clip((gap / iod - lo) / (hi - lo), 0.0, 1.0))
    height = show * min(LOWER_TEETH_IOD * iod, LOWER_TEETH_SHARE * gap)
    if height <= 0.3:
        return None
    width = LOWER_TEETH_WIDTH_SHARE * (upper.half_width if upper is not None else 0.0)
    return _TeethRow(height, width, TEETH_LOWER, True) if width > 1.0 else None


def _teeth(frame: _MouthFrame, coords: np.ndarray, row: _TeethRow, cavity: np.ndarray,
           iod: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha [h, w, 1], rgb [h, w, 3]) of one tooth row at pixel coordinates ``coords`` [h, w, 2]
    (``_MouthFrame.coords``) over the cavity colours ``cavity`` [h, w, 3].

    The teeth are rigid: the row's edge is an arc ``row.height`` into the mouth from the lip's
    middle, curving back towards the lip at the sides (the incisal curve of the arch), and the row
    reaches behind the lip (the caller clips everything to the inner-lip polygon, so the lip
    hides what it covers). It fades out over the outer third of its half-width into the cavity
    (the teeth turn away into the buccal shadow), is shadowed by the lip at its root, and has thin
    gaps at the tooth boundaries ``TOOTH_EDGES_IOD``. Edges are anti-aliased over one pixel."""
    s, t = coords[..., 0], coords[..., 1]
    x = np.abs(s) / max(row.half_width, 1e-6)
    sign = -1.0 if row.lower else 1.0
    middle = float(frame.contour_t(np.zeros(1), row.lower)[0])
    edge = sign * (middle - t) + row.height * (1.0 - TEETH_ARC * x ** 2)  # > 0 on the tooth
    inside = np.clip(edge + 0.5, 0.0, 1.0)
    depth = sign * (t - frame.contour_t(s, row.lower))  # into the mouth from the lip contour
    lateral = np.clip((1.0 - x) / 0.35, 0.0, 1.0)
    alpha = inside * lateral
    root = np.clip(depth / max(0.5 * row.height, 1e-6), 0.0, 1.0)
    light = (0.72 + 0.28 * root) * (1.0 - 0.3 * x ** 2)
    tooth = row.colour * np.clip(light, 0.0, 1.0)[..., None]
    scale = row.half_width / (TEETH_HALF_WIDTH_IOD * iod)
    lines = np.zeros_like(s)
    half_line = max(0.5 * TOOTH_GAP_WIDTH_IOD * iod, 0.35)
    for boundary in TOOTH_EDGES_IOD:
        d = np.abs(np.abs(s) - boundary * iod * scale)
        lines = np.maximum(lines, np.clip(half_line + 0.5 - d, 0.0, 1.0))
    tooth = tooth * (1 - TOOTH_GAP_SHADE * lines[..., None]) + (
        TEETH_GAP * TOOTH_GAP_SHADE * lines[..., None])
    tooth = tooth * lateral[..., None] + cavity * (1 - lateral[..., None])
    return alpha[..., None].astype(np.float32), tooth.astype(np.float32)


def _face_up(kp: np.ndarray) -> np.ndarray:
    """Unit vector [2] pointing up the face (from the mouth towards the eyes) in crop pixels."""
    across = kp[T.LEFT_EYE_CORNERS[0]] - kp[T.RIGHT_EYE_CORNERS[0]]
    up = np.array([across[1], -across[0]])
    return up / max(float(np.linalg.norm(up)), 1e-9)


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Colours [P, 3] of ``image`` float [R, R, 3] at continuous crop pixels ``points`` [P, 2]."""
    xy = np.asarray(points, np.float32).reshape(1, -1, 2) - 0.5
    out = cv2.remap(image, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 3)


def eyelids(source: np.ndarray, source_keypoints: np.ndarray, driving_keypoints: np.ndarray,
            iod: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint closing upper lids from the face's own lid colour.

    For each eye whose driving lid gap is smaller than the source's, the band between where the
    upper lid would be if open (the source's upper contour carried to the driving frame by the
    affine map that takes the source's lower lid and corners onto the driving ones) and the
    driving upper contour is filled with the source's lid skin (the colour at a bright luma percentile of the band
    ``LID_SAMPLE_IOD`` above the source's upper contour), shaded ``LID_SHADE`` towards the lid's
    edge, with a dark lash line (``LASH_WIDTH_IOD``, ``LASH_SHADE``) along the edge. It fades in
    with the closure over ``LID_RAMP``.

    Args:
        source: float32 [R, R, 3] in [0, 1], the source crop.
        source_keypoints, driving_keypoints: [478, 2] crop pixels.
        iod: inter-ocular distance of the source, pixels.

    Returns:
        (rgb float32 [R, R, 3], coverage float32 [R, R] in [0, 1]).
    """
    size = source.shape[0]
    skp = np.asarray(source_keypoints, np.float64)[:, :2]
    dkp = np.asarray(driving_keypoints, np.float64)[:, :2]
    rgb_full = np.zeros((size, size, 3), np.float32)
    cov_full = np.zeros((size, size), np.float32)
    up_s, up_d = _face_up(skp), _face_up(dkp)
    for upper, lower in ((T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER),
                         (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER)):
        us, ls = skp[list(upper)], skp[list(lower)]
        ud, ld = dkp[list(upper)], dkp[list(lower)]
        gap_s = float(np.linalg.norm(us[1:-1] - ls[1:-1], axis=1).mean())
        gap_d = float(np.linalg.norm(ud[1:-1] - ld[1:-1], axis=1).mean())
        if gap_s <= 1e-6:
            continue
        lo, hi = LID_RAMP
        weight = float(np.clip(((1.0 - gap_d / gap_s) - lo) / (hi - lo), 0.0, 1.0))
        if weight <= 0.0:
            continue
        a = np.linalg.lstsq(np.concatenate([ls, np.ones((len(ls), 1))], 1), ld, rcond=None)[0]
        u_open = np.concatenate([us, np.ones((len(us), 1))], 1) @ a
        poly = np.concatenate([u_open, ud[::-1]])
        x0, y0 = np.floor(np.clip(poly.min(0) - 3, 0, size)).astype(int)
        x1, y1 = np.ceil(np.clip(poly.max(0) + 3, 0, size)).astype(int)
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        shape = (int(y1 - y0), int(x1 - x0))
        big = (shape[0] * SUPERSAMPLE, shape[1] * SUPERSAMPLE)
        origin = np.array([x0, y0], np.float64)
        band = np.zeros(big, np.float32)
        _fill(band, [poly], origin)
        coverage = cv2.GaussianBlur(_down(band, shape), (0, 0), max(LID_FEATHER_IOD * iod, 0.3))
        samples = np.concatenate([us[1:-1] + up_s * k * iod
                                  for k in np.linspace(*LID_SAMPLE_IOD, 3)])
        band_rgb = _bilinear(source, samples)
        luma = band_rgb @ np.array([0.299, 0.587, 0.114])
        pick = np.argsort(luma)[int(round((len(luma) - 1) * LID_SAMPLE_PERCENTILE / 100))]
        colour = band_rgb[pick]
        # Shade by height above the lid's edge, relative to the open lid's height.
        ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
        edge_mid = ud[len(ud) // 2]
        height = max(float(np.linalg.norm(u_open[len(ud) // 2] - edge_mid)), 1e-3)
        h = np.clip(((xs - edge_mid[0]) * up_d[0] + (ys - edge_mid[1]) * up_d[1]) / height, 0, 1)
        lid = colour * (LID_SHADE[0] + (LID_SHADE[1] - LID_SHADE[0]) * h)[..., None]
        lash = np.zeros(big, np.float32)
        # The lashes of a closed lid hang below its edge: the line is centred half its width down.
        lash_px = max(LASH_WIDTH_IOD * iod, 0.5)
        pts = np.round((ud - up_d * LASH_DROP * lash_px - origin) * SUPERSAMPLE * 16).astype(np.int32)
        cv2.polylines(lash, [pts], False, 1.0, max(1, round(lash_px * SUPERSAMPLE)),
                      cv2.LINE_AA, 4)
        l_alpha = np.clip(_down(lash, shape), 0, 1)[..., None]
        lid = lid * (1 - l_alpha) + colour * LASH_SHADE * l_alpha
        cov = np.clip(np.maximum(coverage, l_alpha[..., 0] * (gap_d < 0.5 * gap_s)), 0, 1)
        cov = cov * weight
        region = cov_full[y0:y1, x0:x1]
        keep = cov > region
        rgb_full[y0:y1, x0:x1][keep] = lid[keep]
        cov_full[y0:y1, x0:x1] = np.maximum(region, cov)
    return rgb_full, cov_full


def open_weight(source_keypoints: np.ndarray, driving_keypoints: np.ndarray) -> float:
    """How much of the drawn mouth replaces the warped source, in [0, 1] (``OPEN_RAMP_IOD``)."""
    iod = inter_ocular_distance(np.asarray(source_keypoints)[:, :2])
    gaps = inner_lip_gap(np.stack([np.asarray(driving_keypoints, np.float64)[:, :2],
                                   np.asarray(source_keypoints, np.float64)[:, :2]]))
    growth = (gaps[0] - gaps[1]) / iod
    lo, hi = OPEN_RAMP_IOD
    return float(np.clip((growth - lo) / (hi - lo), 0.0, 1.0))


def render(source: np.ndarray, source_keypoints: np.ndarray, driving_keypoints: np.ndarray,
           triangles: np.ndarray | None = None,
           driving_depth: np.ndarray | None = None) -> TeacherFrame:
    """Teacher rendering of one frame.

    Args:
        source: uint8 or float [R, R, 3] RGB source crop (uint8 0–255 or float 0–1).
        source_keypoints: [478, 2] neutral keypoints of the source, crop pixels.
        driving_keypoints: [478, 2] target keypoints, crop pixels.
        triangles: optional cached ``triangulate(source_keypoints, R)``.
        driving_depth: optional [478] driving z (``Rig.keypoints3d``) for painter's order.

    Returns:
        ``TeacherFrame`` with image/flow/alpha. Raises ValueError for shape mismatches.
    """
    src = np.asarray(source)
    if src.ndim != 3 or src.shape[0] != src.shape[1] or src.shape[2] != 3:
        raise ValueError(f"source must be a square RGB crop [R, R, 3], got {list(src.shape)}")
    size = src.shape[0]
    skp = np.asarray(source_keypoints, dtype=np.float64)[:, :2]
    dkp = np.asarray(driving_keypoints, dtype=np.float64)[:, :2]
    if skp.shape != (T.N_LANDMARKS, 2) or dkp.shape != (T.N_LANDMARKS, 2):
        raise ValueError("keypoints must be [478, 2]")
    img = src.astype(np.float32) / 255.0 if src.dtype == np.uint8 else src.astype(np.float32)
    flow = piecewise_affine_flow(skp, dkp, size, triangles, driving_depth)
    warped = remap(img, flow)
    weight = open_weight(skp, dkp)
    if weight > 0.0:
        iod = inter_ocular_distance(skp)
        rgb, coverage = mouth_interior(dkp, size, iod)
        alpha = (coverage * weight).astype(np.float32)
        warped = warped * (1 - alpha[..., None]) + rgb * alpha[..., None]
    else:
        alpha = np.zeros((size, size), np.float32)
    lid_rgb, lid_cov = eyelids(img, skp, dkp, inter_ocular_distance(skp))
    if lid_cov.any():
        warped = warped * (1 - lid_cov[..., None]) + lid_rgb * lid_cov[..., None]
        alpha = np.maximum(alpha, lid_cov).astype(np.float32)
    return TeacherFrame(np.clip(warped, 0.0, 1.0).astype(np.float32), flow, alpha)
