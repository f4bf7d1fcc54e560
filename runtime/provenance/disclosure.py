"""The visible disclosure: a small "AI-generated" badge in every frame facecast makes.

EU AI Act art. 50(4): deployers of deepfakes disclose that the content is artificially generated.
The badge is drawn once into the avatar's base image by the compositor
(``runtime.compositor.Compositor``), so it costs nothing per frame and is in every frame of
``serve``, ``kiosk``, ``cam`` and ``render`` by default. It sits in a corner of the frame away
from the face: a corner whose badge would overlap the render crop (which holds the mouth and
the eyes) is skipped for the next one. On a tight portrait, where every corner overlaps the crop,
a corner is taken whose badge lies where the paste-back mask is 0 to 8 bits (``MASK_CLEAR``;
the crop's corners outside the face: pasting keeps the base image there bit for bit, so the badge
survives every frame). Its text is scaled to the frame (about 3.5% of the frame's shorter side,
never under 9 px, so it stays legible in a 256-px frame), white on a dark, mostly opaque plate so
it reads on any background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
"""Where a badge may go, and the order tried when the asked one overlaps the face."""
TEXT_HEIGHT = 0.035
"""Cap height of the text over the frame's shorter side."""
MIN_TEXT_PX = 9
"""Smallest cap height, pixels (legible at a 256-px frame)."""
PLATE_ALPHA = 0.78
"""Opacity of the plate behind the text."""
MASK_CLEAR = 0.5 / 255
"""Paste-back weight under which pasting a crop changes no 8-bit pixel (it moves a pixel by
under half a level, which rounds away): where the mask is below it a badge drawn into the base
image is kept bit for bit."""


@dataclass(frozen=True)
class Badge:
    """A disclosure badge.

    Attributes:
        text: what it says (ASCII: OpenCV's Hershey font draws no other glyphs).
        corner: one of ``CORNERS``; another corner is used when this one would cover the face.
    """

    text: str = "AI-generated"
    corner: str = "bottom-right"

    def __post_init__(self) -> None:
        if self.corner not in CORNERS:
            raise ValueError(f"badge corner must be one of {', '.join(CORNERS)}, got "
                             f"{self.corner!r}")
        if not self.text.strip() or not self.text.isascii() or len(self.text) > 40:
            raise ValueError("badge text must be 1–40 printable ASCII characters")


def _layout(shape: tuple[int, ...], badge: Badge) -> tuple[float, int, int, int, int]:
    """(font scale, thickness, text width, text height, margin) for a frame of ``shape``."""
    h, w = shape[:2]
    cap = max(MIN_TEXT_PX, round(min(h, w) * TEXT_HEIGHT))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, unit_h), _ = cv2.getTextSize("A", font, 1.0, 1)
    scale = cap / unit_h
    thickness = max(1, round(cap / 10))
    (tw, th), _ = cv2.getTextSize(badge.text, font, scale, thickness)
    return scale, thickness, tw, th, max(3, cap // 2)


def badge_box(shape: tuple[int, ...], badge: Badge,
              avoid: tuple[int, int, int] | None = None,
              mask: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """The badge's plate (x0, y0, x1, y1), pixels, in a frame of ``shape`` [H, W, ...].

    The asked corner, or the first of ``CORNERS`` whose plate misses ``avoid`` (x0, y0, side:
    the render crop). When every plate overlaps the crop and ``mask`` (float [side, side], the
    paste-back weight over the crop box) is given, the first corner whose plate covers only
    crop pixels whose mask is under ``MASK_CLEAR``. Raises ValueError when no corner is clear
    either way."""
    h, w = shape[:2]
    _, _, tw, th, pad = _layout(shape, badge)
    pw, ph = tw + 2 * pad, th + 2 * pad
    edge = pad
    order = (badge.corner, *(c for c in CORNERS if c != badge.corner))
    boxes = []
    for corner in order:
        x0 = w - edge - pw if corner.endswith("right") else edge
        y0 = h - edge - ph if corner.startswith("bottom") else edge
        boxes.append((x0, y0, x0 + pw, y0 + ph))
    for box in boxes:
        if avoid is None or not _overlaps(box, avoid):
            return box
    if mask is not None:
        for box in boxes:
            if not _covers_mask(box, avoid, mask):
                return box
    raise ValueError("the disclosure badge fits no corner clear of the face; use a frame "
                     "with more room around the face")


def _overlaps(box: tuple[int, int, int, int], crop: tuple[int, int, int]) -> bool:
    cx0, cy0, side = crop
    x0, y0, x1, y1 = box
    return x0 < cx0 + side and cx0 < x1 and y0 < cy0 + side and cy0 < y1


def _covers_mask(box: tuple[int, int, int, int], crop: tuple[int, int, int],
                 mask: np.ndarray) -> bool:
    """Whether ``box`` covers a pixel of the crop where ``mask`` [side, side] reaches
    ``MASK_CLEAR``."""
    cx0, cy0, side = crop
    m = np.asarray(mask)
    if m.shape[:2] != (side, side):
        raise ValueError(f"mask must be [{side}, {side}] over the crop box, got {list(m.shape)}")
    x0, y0, x1, y1 = box
    ix0, iy0 = max(x0 - cx0, 0), max(y0 - cy0, 0)
    ix1, iy1 = min(x1 - cx0, side), min(y1 - cy0, side)
    return ix0 < ix1 and iy0 < iy1 and bool((m[iy0:iy1, ix0:ix1] >= MASK_CLEAR).any())


def draw_badge(image: np.ndarray, badge: Badge,
               avoid: tuple[int, int, int] | None = None,
               mask: np.ndarray | None = None) -> np.ndarray:
    """A copy of uint8 [H, W, 3] RGB ``image`` with ``badge`` drawn (``badge_box``). Raises
    ValueError as ``badge_box`` does."""
    out = np.array(image, dtype=np.uint8, copy=True)
    x0, y0, x1, y1 = badge_box(out.shape, badge, avoid, mask)
    scale, thickness, _tw, th, pad = _layout(out.shape, badge)
    plate = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.round(plate * (1 - PLATE_ALPHA) + 20 * PLATE_ALPHA).astype(np.uint8)
    cv2.putText(out, badge.text, (x0 + pad, y0 + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return out
