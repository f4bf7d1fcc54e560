"""``facecast eval face``: what a viewer sees of a talking face, measured on any video.

The judge shares nothing with our own models: the file is decoded by PyAV (FFmpeg, video stream
only), every frame is measured by mediapipe's legacy Face Mesh (0.10.21, refined: 478 points,
tracking mode, one face), and the figures are plain numpy/OpenCV statistics. It can be pointed at
a ``facecast`` render or at a real recording of a speaker, so the two can be compared.

Per frame (all distances in image pixels of that frame)
------------------------------------------------------
* **Eye opening**: for each eye, lid gap / eye width: the distance of the mid upper and lower
  lid vertices (``avatars.topology.RIGHT_EYE_TOP``/``_BOTTOM`` 159/145, ``LEFT_EYE_TOP``/
  ``_BOTTOM`` 386/374) over the distance of the eye corners (``RIGHT_EYE_CORNERS`` 33/133,
  ``LEFT_EYE_CORNERS`` 263/362); the two eyes are averaged. Dimensionless, ~0.25–0.35 open.
* **Mouth gap**: ``avatars.rig.inner_lip_gap_iod`` — the largest central inner-lip pair distance
  (82/87, 13/14, 312/317) over the inter-ocular distance (IOD, eye-corner centres). The mouth is
  *open* when the gap exceeds ``OPEN_GAP_IOD``.
* **Interior** (open frames only, and only when the inner-lip polygon ``LIPS_INNER_UPPER`` +
  reversed ``LIPS_INNER_LOWER`` has an area of at least ``MIN_INTERIOR_PX`` pixels²):
  darkness = 10th-percentile luma (Rec. 601 Y = 0.299 R + 0.587 G + 0.114 B, 0–255) inside the
  polygon ÷ the median luma of two square cheek patches (side ``CHEEK_PATCH_IOD`` × IOD, centred
  on Face Mesh vertices 50 (subject's right cheek) and 280 (left cheek), below the eyes and clear
  of the nose and lips); hue = mean (R − B) / 255 inside the polygon (reddish > 0).
* **Flicker**: mean |Y(t) − Y(t−1)| (levels of 255) over the *stable* face region of two
  consecutive frames with a face: the convex hull of the face oval minus the outer-lip and both
  eye polygons, each dilated by ``EXCLUDE_IOD`` × IOD, in both frames. Head motion counts too,
  so a moving real head gives more than a static one.

Summary (``evaluate_face``)
---------------------------
* Blinks: the open reference ``eye_open_ref`` is the ``OPEN_PERCENTILE``-th percentile of the
  eye-opening track; ratio = opening / reference. ``blink_min_ratio`` is the lowest ratio
  (closure depth: 0 = lids meet, 1 = never closes). A blink event is a run of frames with
  ratio < ``BLINK_RATIO`` (one frame suffices); runs separated by fewer than ``BLINK_SEPARATION``
  frames at or above it are one event (frames without a face are neither). ``blinks``,
  ``blinks_per_min`` (over the video's duration) and each event's lowest ratio ``blink_depths``.
* Interior: ``open_frames``, ``interior_darkness_median`` / ``_p90`` and
  ``interior_red_minus_blue`` (mean over open frames); None without open frames. Since a smile
  with parted lips shows bright teeth inside the polygon, ``wide_open_frames`` and
  ``interior_darkness_wide_median`` give the same figure over frames with a gap above
  ``WIDE_GAP_IOD`` only (the cavity of an open vowel).
* Mouth range: ``mouth_gap_p5`` / ``_p50`` / ``_p95`` of the gap (IOD) over frames with a face,
  ``mouth_range`` = p95 − p5.
* ``flicker`` (mean over consecutive pairs) and ``flicker_p95``.
* ``frames``, ``fps`` (1 / median pts interval), ``seconds``, ``face_found_fraction``.

References (also in the JSON as ``reference``)
----------------------------------------------
* Interior darkness, issue 17: real speakers 0.04–0.08; the bar for facecast renders ≤ 0.2.
* Flicker, issue 17: a real static face and background give ~1–2 levels of 255.
* Blinks, literature (Bentivoglio et al., "Analysis of blink rate patterns in normal subjects",
  Mov. Disord. 1997): ~17 /min at rest, ~26 /min in conversation; a full blink closes the lids
  (mediapipe's mesh rarely reaches 0: expect a ratio of ~0.1–0.3 for a full human blink).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avatars import topology as T
from avatars.bundle import inter_ocular_distance
from avatars.rig import inner_lip_gap_iod

OPEN_GAP_IOD = 0.04
"""Inner-lip gap (IOD) above which the mouth counts as open for the interior figures."""
WIDE_GAP_IOD = 0.25
"""Inner-lip gap (IOD) above which the mouth counts as wide open (a vowel, not a parted-lips
smile showing teeth) for ``interior_darkness_wide_median``."""
MIN_INTERIOR_PX = 12
"""Smallest inner-lip polygon area (pixels²) for the interior figures of a frame."""
INTERIOR_PERCENTILE = 10.0
"""Percentile of the interior luma taken as its darkness (the darkest tenth of the cavity)."""
CHEEK_VERTICES = (50, 280)
"""Face Mesh vertices at the centre of the cheek patches (subject's right, left)."""
CHEEK_PATCH_IOD = 0.12
"""Side of each square cheek patch, IODs."""
EXCLUDE_IOD = 0.12
"""Dilation of the lip and eye polygons removed from the flicker region, IODs."""
OPEN_PERCENTILE = 90.0
"""Percentile of the eye-opening track taken as the eyes' open reference."""
BLINK_RATIO = 0.5
"""Eye opening / open reference under which a frame is part of a blink."""
BLINK_SEPARATION = 2
"""Fewest frames at or above ``BLINK_RATIO`` that separate two blinks."""

REFERENCE: dict[str, Any] = {
    "interior_darkness": {"human": [0.04, 0.08], "bar_max": 0.2, "source": "issue 17"},
    "flicker": {"human_static": [1.0, 2.0], "unit": "luma levels of 255",
                "source": "issue 17"},
    "blinks_per_min": {"human_rest": 17, "human_conversation": 26,
                       "source": "Bentivoglio et al., Mov. Disord. 1997"},
    "blink_min_ratio": {"full_blink": "lids meet (0); mediapipe reads ~0.1-0.3"},
}
"""Human reference values and the issue's bars, copied into every report."""


# --- pure per-frame measures ---------------------------------------------------------------


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma Y = 0.299 R + 0.587 G + 0.114 B of uint8 RGB [H, W, 3]: float32 [H, W],
    0–255."""
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def eye_opening(lm: np.ndarray) -> float:
    """Lid gap / eye width of landmarks [478, 2+] (pixels), averaged over both eyes."""
    p = np.asarray(lm, dtype=np.float64)[:, :2]

    def one(top: int, bottom: int, corners: tuple[int, int]) -> float:
        width = float(np.linalg.norm(p[corners[0]] - p[corners[1]]))
        return float(np.linalg.norm(p[top] - p[bottom])) / width if width > 0 else math.nan

    return 0.5 * (one(T.RIGHT_EYE_TOP, T.RIGHT_EYE_BOTTOM, T.RIGHT_EYE_CORNERS)
                  + one(T.LEFT_EYE_TOP, T.LEFT_EYE_BOTTOM, T.LEFT_EYE_CORNERS))


def contour(lm: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]) -> np.ndarray:
    """The closed polygon float [P, 2] of an upper and a lower contour sharing their ends."""
    ids = list(upper) + list(lower[-2:0:-1])
    return np.asarray(lm, dtype=np.float64)[ids, :2]


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray, dilate_px: float = 0.0
                 ) -> np.ndarray:
    """bool [H, W]: pixels inside ``polygon`` float [P, 2] (x, y pixels), grown by
    ``dilate_px`` pixels (elliptic structuring element)."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    r = int(round(dilate_px))
    if r > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    return mask.astype(bool)


def cheek_luma(y: np.ndarray, lm: np.ndarray, iod: float) -> float:
    """Median luma (0–255) of the two square cheek patches (``CHEEK_VERTICES``, side
    ``CHEEK_PATCH_IOD`` × ``iod`` pixels, at least 3) of luma image float [H, W]; NaN if both
    fall outside the image."""
    h, w = y.shape
    half = max(1, int(round(0.5 * CHEEK_PATCH_IOD * iod)))
    parts = []
    for v in CHEEK_VERTICES:
        cx, cy = (int(round(c)) for c in lm[v, :2])
        patch = y[max(0, cy - half):min(h, cy + half + 1), max(0, cx - half):min(w, cx + half + 1)]
        parts.append(patch.reshape(-1))
    vals = np.concatenate(parts)
    return float(np.median(vals)) if vals.size else math.nan


def interior(rgb: np.ndarray, y: np.ndarray, lm: np.ndarray, iod: float
             ) -> tuple[float, float]:
    """(darkness, red − blue) of the mouth interior: the ``INTERIOR_PERCENTILE`` luma inside
    the inner-lip polygon ÷ ``cheek_luma``, and mean (R − B) / 255 inside it. (NaN, NaN) when
    the polygon's area is under ``MIN_INTERIOR_PX`` pixels² (lips together: only the line of
    the contour would be filled) or the cheeks are black."""
    poly = contour(lm, T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER)
    if cv2.contourArea(poly.astype(np.float32)) < MIN_INTERIOR_PX:
        return math.nan, math.nan
    inside = polygon_mask(y.shape, poly)
    cheek = cheek_luma(y, lm, iod)
    dark = float(np.percentile(y[inside], INTERIOR_PERCENTILE)) / cheek if cheek > 0 else math.nan
    px = rgb[inside].astype(np.float64)
    return dark, float((px[:, 0] - px[:, 2]).mean() / 255.0)


def stable_region(shape: tuple[int, int], lm: np.ndarray, iod: float) -> np.ndarray:
    """bool [H, W]: the face-oval convex hull without the outer-lip and eye polygons, each grown
    by ``EXCLUDE_IOD`` × ``iod`` pixels — the skin that should not change while speaking."""
    p = np.asarray(lm, dtype=np.float64)[:, :2]
    hull = cv2.convexHull(np.round(p[list(T.FACE_OVAL)]).astype(np.int32))[:, 0]
    region = polygon_mask(shape, hull.astype(np.float64))
    grow = EXCLUDE_IOD * iod
    for upper, lower in ((T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER),
                         (T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER),
                         (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER)):
        region &= ~polygon_mask(shape, contour(p, upper, lower), grow)
    return region


def flicker(y_prev: np.ndarray, y: np.ndarray, region: np.ndarray) -> float:
    """Mean |y − y_prev| (luma levels) over bool ``region`` [H, W]; NaN if it is empty."""
    return float(np.abs(y[region] - y_prev[region]).mean()) if region.any() else math.nan


def blink_events(ratio: np.ndarray, threshold: float = BLINK_RATIO,
                 separation: int = BLINK_SEPARATION) -> list[tuple[int, int, float]]:
    """Blinks in an eye-opening ratio track float [F] (NaN: no face, neither open nor closed).

    A blink is a run of frames with ratio < ``threshold``; runs with fewer than ``separation``
    frames ≥ ``threshold`` between them are merged. Returns (first frame, last frame, lowest
    ratio) per blink, in order.
    """
    events: list[list] = []
    above = separation  # frames ≥ threshold since the last closed frame
    for i, r in enumerate(np.asarray(ratio, dtype=np.float64)):
        if not math.isfinite(r):
            continue
        if r < threshold:
            if events and above < separation:
                events[-1][1] = i
                events[-1][2] = min(events[-1][2], float(r))
            else:
                events.append([i, i, float(r)])
            above = 0
        else:
            above += 1
    return [(a, b, m) for a, b, m in events]


# --- decoding and tracking -----------------------------------------------------------------


def open_media(path: Path):
    """``av.open(path)`` for reading; raises ValueError (one line) for a file that is not
    readable media."""
    import av  # evaluation-only dependency, imported on use

    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"cannot decode {path}: not a readable media file ({why})") from None


def read_frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """(presentation time in seconds, uint8 RGB [H, W, 3]) of every frame of the first video
    stream of ``path``, decoded by PyAV in presentation order. Raises ValueError for a file that
    is not readable media, has no video, or a frame without a pts."""
    import av

    container = open_media(path)
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    raise ValueError(f"{path}: video frame without a pts")
                yield float(frame.time), frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ValueError(f"cannot decode {path}: {why}") from None


def landmarks(mesh: Any, rgb: np.ndarray) -> np.ndarray | None:
    """Face Mesh landmarks float64 [478, 2] in pixels of uint8 RGB [H, W, 3]; None if no face."""
    h, w = rgb.shape[:2]
    result = mesh.process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
        return None
    return np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark],
                    dtype=np.float64)


@dataclass
class Track:
    """Per-frame measures of one video (NaN where not measured; see the module docstring)."""

    times: list[float] = field(default_factory=list)  # seconds
    marks: list[np.ndarray | None] = field(default_factory=list)  # [478, 2] pixels or None
    eye: list[float] = field(default_factory=list)  # lid gap / eye width
    gap: list[float] = field(default_factory=list)  # inner-lip gap / IOD
    dark: list[float] = field(default_factory=list)  # interior p10 luma / cheek luma
    red: list[float] = field(default_factory=list)  # interior mean (R − B) / 255
    flick: list[float] = field(default_factory=list)  # luma levels vs the previous frame


def measure(path: Path) -> Track:
    """Decode ``path`` and measure every frame (Face Mesh in tracking mode, one face)."""
    from avatars.enroll import import_mediapipe, native_stderr_silenced

    mp = import_mediapipe()  # evaluation-only dependency

    track = Track()
    prev: tuple[np.ndarray, np.ndarray] | None = None  # (luma, stable region) of last frame
    with native_stderr_silenced(), mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=True,
    ) as mesh:
        for t, rgb in read_frames(path):
            lm = landmarks(mesh, rgb)
            track.times.append(t)
            track.marks.append(lm)
            iod = inter_ocular_distance(lm) if lm is not None else 0.0
            if lm is None or iod <= 0.0:
                for xs in (track.eye, track.gap, track.dark, track.red, track.flick):
                    xs.append(math.nan)
                prev = None
                continue
            y = luma(rgb)
            gap = float(inner_lip_gap_iod(lm[None])[0])
            dark, red = interior(rgb, y, lm, iod) if gap > OPEN_GAP_IOD else (math.nan, math.nan)
            region = stable_region(y.shape, lm, iod)
            track.eye.append(eye_opening(lm))
            track.gap.append(gap)
            track.dark.append(dark)
            track.red.append(red)
            track.flick.append(flicker(prev[0], y, prev[1] & region) if prev else math.nan)
            prev = (y, region)
    if not track.times:
        raise ValueError(f"{path}: no decodable video frames")
    return track


# --- summary -------------------------------------------------------------------------------


def _r(x: float | None, nd: int = 4) -> float | None:
    """``x`` rounded for reading, None for None or NaN."""
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _pct(values: np.ndarray, q: float) -> float:
    """The q-th percentile of the finite entries of ``values``; NaN if there are none."""
    v = values[np.isfinite(values)]
    return float(np.percentile(v, q)) if v.size else math.nan


def summarise(track: Track) -> dict[str, Any]:
    """The JSON-ready report of a ``Track`` (keys as in the module docstring)."""
    times = np.asarray(track.times)
    n = times.size
    steps = np.diff(np.sort(times))
    steps = steps[steps > 0]
    fps = 1.0 / float(np.median(steps)) if steps.size else math.nan
    seconds = float(times.max() - times.min()) + (1.0 / fps if math.isfinite(fps) else 0.0)
    eye, gap = np.asarray(track.eye), np.asarray(track.gap)
    dark, red, flick = np.asarray(track.dark), np.asarray(track.red), np.asarray(track.flick)
    ref = _pct(eye, OPEN_PERCENTILE)
    ratio = eye / ref if ref > 0 else np.full(n, math.nan)
    blinks = blink_events(ratio)
    p5, p50, p95 = (_pct(gap, q) for q in (5, 50, 95))
    opened = np.isfinite(dark)
    wide = opened & (gap > WIDE_GAP_IOD)
    return {
        "frames": n,
        "fps": _r(fps, 3),
        "seconds": _r(seconds, 3),
        "face_found_fraction": _r(float(np.isfinite(gap).mean()), 4),
        "eye_open_ref": _r(ref),
        "blink_min_ratio": _r(float(np.nanmin(ratio)) if np.isfinite(ratio).any() else None),
        "blinks": len(blinks),
        "blinks_per_min": _r(60.0 * len(blinks) / seconds if seconds > 0 else None, 2),
        "blink_depths": [_r(m, 3) for _, _, m in blinks],
        "open_frames": int(opened.sum()),
        "interior_darkness_median": _r(_pct(dark, 50)),
        "interior_darkness_p90": _r(_pct(dark, 90)),
        "wide_open_frames": int(wide.sum()),
        "interior_darkness_wide_median": _r(_pct(dark[wide], 50)),
        "interior_red_minus_blue": _r(float(red[opened].mean()) if opened.any() else None),
        "mouth_gap_p5": _r(p5),
        "mouth_gap_p50": _r(p50),
        "mouth_gap_p95": _r(p95),
        "mouth_range": _r(p95 - p5),
        "flicker": _r(float(np.nanmean(flick)) if np.isfinite(flick).any() else None, 3),
        "flicker_p95": _r(_pct(flick, 95), 3),
        "reference": REFERENCE,
    }


def evaluate_face(path: Path, sheet: Path | None = None) -> dict[str, Any]:
    """Measure the talking face in the video at ``path`` (module docstring); with ``sheet``,
    also write a contact sheet PNG there (``contact_sheet``) and name it in the report as
    ``sheet``. Raises ValueError for a file that cannot be decoded or has no video."""
    track = measure(Path(path))
    report = summarise(track)
    if sheet is not None:
        report["sheet"] = str(contact_sheet(Path(path), track, Path(sheet)))
    return report


# --- contact sheet -------------------------------------------------------------------------

TILE = 320
"""Side of each contact-sheet tile, pixels."""


def sheet_frames(track: Track) -> list[tuple[str, int]]:
    """(label, frame index) of the frames a human should look at: the most open mouth, the most
    closed eyes, and a neutral frame (eyes ≥ 90 % open, the smallest mouth gap). Frames without
    a face are never picked; an empty list if no frame has one."""
    eye, gap = np.asarray(track.eye), np.asarray(track.gap)
    if not np.isfinite(gap).any():
        return []
    ref = _pct(eye, OPEN_PERCENTILE)
    calm = np.where(np.isfinite(eye) & (eye >= 0.9 * ref), gap, np.nan)
    neutral = int(np.nanargmin(calm)) if np.isfinite(calm).any() else int(np.nanargmin(gap))
    return [("most open mouth", int(np.nanargmax(gap))),
            ("most closed eyes", int(np.nanargmin(eye))),
            ("neutral", neutral)]


def _crop(rgb: np.ndarray, centre: np.ndarray, side: float) -> np.ndarray:
    """A square uint8 tile ``TILE`` px of ``rgb`` around ``centre`` (x, y), ``side`` px wide
    (black outside the image)."""
    scale = TILE / side
    m = np.array([[scale, 0.0, TILE / 2 - scale * centre[0]],
                  [0.0, scale, TILE / 2 - scale * centre[1]]])
    return cv2.warpAffine(rgb, m, (TILE, TILE), flags=cv2.INTER_AREA)


def _annotate(rgb: np.ndarray, lm: np.ndarray, iod: float) -> np.ndarray:
    """A copy of ``rgb`` with the inner-lip polygon (green), the eye lid/corner points (yellow)
    and the cheek patches (cyan) drawn on it."""
    out = rgb.copy()
    poly = np.round(contour(lm, T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER)).astype(np.int32)
    cv2.polylines(out, [poly], True, (0, 255, 0), 1, cv2.LINE_AA)
    for v in (T.RIGHT_EYE_TOP, T.RIGHT_EYE_BOTTOM, *T.RIGHT_EYE_CORNERS,
              T.LEFT_EYE_TOP, T.LEFT_EYE_BOTTOM, *T.LEFT_EYE_CORNERS):
        cv2.circle(out, tuple(int(round(c)) for c in lm[v]), 1, (255, 255, 0), -1)
    half = max(1, int(round(0.5 * CHEEK_PATCH_IOD * iod)))
    for v in CHEEK_VERTICES:
        cx, cy = (int(round(c)) for c in lm[v])
        cv2.rectangle(out, (cx - half, cy - half), (cx + half, cy + half), (0, 255, 255), 1)
    return out


def _fmt(x: float) -> str:
    """``x`` with three decimals, or "-" for NaN (not measured)."""
    return f"{x:.3f}" if math.isfinite(x) else "-"


def _caption(lines: list[str]) -> np.ndarray:
    """A black band uint8 [18·len + 8, 2·TILE, 3] with ``lines`` in white."""
    band = np.zeros((18 * len(lines) + 8, 2 * TILE, 3), np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(band, text, (6, 18 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return band


def contact_sheet(path: Path, track: Track, out: Path) -> Path:
    """Write a PNG to ``out``: one row per ``sheet_frames`` frame — the face crop (2.2 IOD
    wide) and a mouth close-up (1 IOD wide), annotated, over a caption with that frame's
    figures. The chosen frames are decoded again. Returns ``out``. Raises ValueError when no
    frame has a face."""
    from PIL import Image

    picks = sheet_frames(track)
    if not picks:
        raise ValueError(f"{path}: no frame with a face to put on a contact sheet")
    wanted = {i for _, i in picks}
    frames = {i: rgb for i, (_, rgb) in enumerate(read_frames(path)) if i in wanted}
    ref = _pct(np.asarray(track.eye), OPEN_PERCENTILE)
    rows = []
    for label, i in picks:
        lm = track.marks[i]
        assert lm is not None
        iod = inter_ocular_distance(lm)
        img = _annotate(frames[i], lm, iod)
        eyes = lm[list(T.RIGHT_EYE_CORNERS + T.LEFT_EYE_CORNERS)].mean(axis=0)
        mouth = lm[[T.INNER_CORNER_RIGHT, T.INNER_CORNER_LEFT]].mean(axis=0)
        face = _crop(img, 0.5 * (eyes + mouth), 2.2 * iod)
        close = _crop(img, mouth, 1.0 * iod)
        lines = [f"{label}: frame {i}, t {track.times[i]:.2f} s",
                 (f"mouth gap {track.gap[i]:.3f} IOD   eye opening {track.eye[i]:.3f} "
                  f"({track.eye[i] / ref:.2f} of open)"),
                 f"interior darkness {_fmt(track.dark[i])}   R-B {_fmt(track.red[i])}"]
        rows.append(np.concatenate([np.concatenate([face, close], axis=1), _caption(lines)]))
    sheet = np.concatenate(rows, axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out)
    return out
