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
  ``LIPS_INNER_LOWER``) a mouth is drawn from the keypoints alone: a dark cavity, an upper tooth
  row hanging from the upper inner lip, a lower row standing on the lower inner lip (so it moves
  with the jaw), and a tongue behind the lower teeth. It is blended in by how much wider the
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
TEETH_UPPER = np.array([0.86, 0.82, 0.74])
TEETH_LOWER = np.array([0.74, 0.70, 0.62])
TEETH_GAP = np.array([0.42, 0.38, 0.34])
TONGUE = np.array([0.50, 0.22, 0.24])

UPPER_TEETH_IOD = 0.11
"""Most visible height of the upper incisors below the upper inner lip, IOD units (an adult
central incisor crown is about 10 mm, IOD about 63 mm: ~0.16; the lip covers part)."""
LOWER_TEETH_IOD = 0.07
"""Most visible height of the lower incisors above the lower inner lip, IOD units."""
UPPER_TEETH_SHARE = 0.35
"""The upper teeth show at most this share of the opening (inner-lip gap at the centre): in
speech the gap below the incisors' edge is dark (the cavity, the tongue low behind the lower
teeth), so the teeth never fill the mouth."""
LOWER_TEETH_SHARE = 0.12
"""The lower teeth show at most this share of the opening: the lower lip covers them in most
speech and they appear at wide openings only."""
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
TOOTH_WIDTH_IOD = 0.13
"""Spacing of the drawn gaps between teeth, IOD units (central incisor ≈ 8.5 mm / 63 mm)."""


@dataclass(frozen=True)
class TeacherFrame:
    """One teacher rendering of a crop of side R.

    Attributes:
        image: float32 [R, R, 3] in [0, 1], RGB.
        flow: float32 [R, R, 2], the source point (u, v) in crop pixels sampled for each pixel.
        alpha: float32 [R, R] in [0, 1], weight of the drawn mouth interior.
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

    # Teeth rows: a band along each inner lip, shading towards the corners, dark gaps between.
    down = _lip_normal(upper)
    along = (upper[-1] - upper[0]) / max(np.linalg.norm(upper[-1] - upper[0]), 1e-6)
    rows = ((lower, min(LOWER_TEETH_IOD * iod, LOWER_TEETH_SHARE * gap), TEETH_LOWER, -1.0),
            (upper, min(UPPER_TEETH_IOD * iod, UPPER_TEETH_SHARE * gap), TEETH_UPPER, 1.0))
    for contour, height, colour, sign in rows:
        inner = contour + sign * down * height
        band = np.zeros(big, np.float32)
        _fill(band, [np.concatenate([contour, inner[::-1]])], origin)
        lines = np.zeros(big, np.float32)
        mid = contour[5]
        for k in range(-3, 4):
            x = mid + along * (k + 0.5) * TOOTH_WIDTH_IOD * iod
            a = np.round((x - origin) * SUPERSAMPLE * 16).astype(np.int32)
            b = np.round((x + sign * down[5] * height - origin) * SUPERSAMPLE * 16)
            cv2.line(lines, tuple(int(v) for v in a), tuple(int(v) for v in b), 1.0,
                     max(1, SUPERSAMPLE // 2), cv2.LINE_AA, 4)
        b_alpha = _down(band, shape)[..., None]
        g_alpha = np.clip(_down(lines, shape), 0, 1)[..., None] * b_alpha
        lateral = np.abs((xs - mid[0]) * along[0] + (ys - mid[1]) * along[1])[..., None] / half_w
        tooth = colour * np.clip(1.0 - 0.55 * lateral ** 2, 0.35, 1.0)
        tooth = tooth * (1 - g_alpha) + TEETH_GAP * g_alpha
        rgb = rgb * (1 - b_alpha) + tooth * b_alpha
    rgb_full[y0:y1, x0:x1] = rgb
    cov_full[y0:y1, x0:x1] = np.clip(coverage, 0.0, 1.0)
    return rgb_full, cov_full


def _lip_normal(upper: np.ndarray) -> np.ndarray:
    """Unit normals [11, 2] of the upper inner-lip contour pointing into the mouth (down-face)."""
    tangent = np.gradient(upper, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    across = upper[-1] - upper[0]
    face_down = np.array([-across[1], across[0]])  # right→left across the face, rotated: down
    normal *= np.sign((normal @ face_down).sum() or 1.0)
    return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)


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
    return TeacherFrame(np.clip(warped, 0.0, 1.0).astype(np.float32), flow, alpha)
