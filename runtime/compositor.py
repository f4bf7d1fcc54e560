"""Paste rendered face crops back into the avatar's full image through the bundle's soft mask.

Outside the mask (mask value 0, which includes everything outside the crop box) the output is
the source image bit for bit — with the disclosure badge drawn in, when one is given
(``runtime.provenance.disclosure``: drawn once into the base image, outside the crop box or,
on a tight portrait, where the mask is 0); inside,
``out = source·(1 − m) + crop·m`` rounded to uint8. With ``watermark=True`` the invisible mark
(``runtime.provenance.watermark``) is then added to the whole frame: after compositing, before
any encoder.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatars.bundle import Avatar


class Compositor:
    """Paste-back for one avatar.

    Args:
        avatar: the avatar whose image, crop box and mask are used.
        crop_size: side R of the rendered crops.
        badge: the disclosure badge drawn into every frame (``runtime.provenance.disclosure.Badge``), or
            None for none (the products pass one by default; evaluations pass none).
        watermark: add the invisible watermark to every frame, its payload the avatar's mark
            (``runtime.provenance.watermark.payload_for`` of its content hash), its strength
            shaped by the avatar image's texture. The products pass True by default;
            evaluations leave it off so that their figures stay bit-exact.

    ``paste(crop)`` takes uint8 [R, R, 3] (or float [3, R, R] / [R, R, 3] in [0, 1]) and returns
    a new uint8 [H, W, 3] RGB full frame; ValueError for a wrong shape. The watermark adds about
    0.15 ms a frame at 512² (two saturating OpenCV operations).
    """

    def __init__(self, avatar: Avatar, crop_size: int, badge=None, watermark: bool = False):
        self.image = avatar.image
        if badge is not None:
            from runtime.provenance.disclosure import draw_badge

            self.image = draw_badge(avatar.image, badge, avoid=avatar.crop_box,
                                    mask=avatar.mask)
        self.badge = badge
        self.crop_size = crop_size
        x0, y0, side = avatar.crop_box
        self.box = (x0, y0, side)
        m = np.ascontiguousarray(avatar.mask, dtype=np.float32)
        self.mask = m  # [side, side] weight of the crop
        self.keep = np.ascontiguousarray(1.0 - m)  # [side, side] weight of the source
        self.region = np.ascontiguousarray(self.image[y0:y0 + side, x0:x0 + side])
        self.watermark = None
        if watermark:
            from runtime.provenance.watermark import Watermarker, payload_for, texture_mask

            self.watermark = Watermarker(self.image.shape[:2],
                                         payload_for(avatar.metadata["content_hash"]),
                                         texture_mask(self.image), host=self.image)

    def _crop_pixels(self, crop: np.ndarray) -> np.ndarray:
        """uint8 [side, side, 3] crop at the box's size (float crops in [0, 1] are quantised
        to uint8 first)."""
        c = np.asarray(crop)
        if c.ndim == 3 and c.shape[0] == 3 and c.shape[2] != 3:
            c = c.transpose(1, 2, 0)
        if c.shape != (self.crop_size, self.crop_size, 3):
            raise ValueError(f"crop must be [{self.crop_size}, {self.crop_size}, 3], "
                             f"got {list(np.asarray(crop).shape)}")
        if c.dtype != np.uint8:
            c = np.clip(c.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        c = np.ascontiguousarray(c)
        side = self.box[2]
        if side != self.crop_size:
            interp = cv2.INTER_AREA if side < self.crop_size else cv2.INTER_LINEAR
            c = cv2.resize(c, (side, side), interpolation=interp)
        return c

    def paste(self, crop: np.ndarray) -> np.ndarray:
        """The full frame with ``crop`` pasted in (a new array; the avatar is not modified).

        One OpenCV call blends the box, ``source·(1 − m) + crop·m`` rounded to uint8
        (``cv2.blendLinear``; it releases the GIL, so sessions composite in parallel threads):
        where m = 0 the source is kept bit for bit, where m = 1 the crop. About 3× faster than
        the float32 NumPy blend it replaced (0.56 vs 1.51 ms for a 202-px box on the reference
        CPU), within one level of it on 0.003% of the box's pixels."""
        x0, y0, side = self.box
        blended = cv2.blendLinear(self.region, self._crop_pixels(crop), self.keep, self.mask)
        out = self.image.copy()
        out[y0:y0 + side, x0:x0 + side] = blended
        if self.watermark is not None:
            out = self.watermark.apply(out)
        return out

    def crop_to_image(self, points: np.ndarray) -> np.ndarray:
        """Map [..., 2] crop pixels (side R) to full-image pixels."""
        x0, y0, side = self.box
        p = np.asarray(points, dtype=np.float64)[..., :2] * (side / self.crop_size)
        return p + np.array([x0, y0], dtype=np.float64)
