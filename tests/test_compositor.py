"""Paste-back (runtime.compositor): the background is the source bit for bit, the face changes,
and crop coordinates map back to the avatar's own landmarks."""

from __future__ import annotations

import numpy as np
import pytest

import avatars
from runtime.compositor import Compositor


def _outside(avatar: avatars.Avatar) -> np.ndarray:
    """bool [H, W]: pixels that must stay the source's (mask 0 or outside the crop box)."""
    x0, y0, side = avatar.crop_box
    keep = np.ones(avatar.image.shape[:2], bool)
    keep[y0:y0 + side, x0:x0 + side] = avatar.mask <= 0.0
    return keep


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.parametrize("kind", ["uint8", "float_hwc", "float_chw"])
def test_bit_exact_outside_the_mask(default_avatar: avatars.Avatar, size: int, kind: str) -> None:
    rng = np.random.default_rng(size)
    comp = Compositor(default_avatar, size)
    crop8 = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    crop = {"uint8": crop8,
            "float_hwc": crop8.astype(np.float32) / 255.0,
            "float_chw": (crop8.astype(np.float32) / 255.0).transpose(2, 0, 1)}[kind]
    out = comp.paste(crop)
    assert out.dtype == np.uint8 and out.shape == default_avatar.image.shape
    keep = _outside(default_avatar)
    assert keep.any() and (~keep).any()
    assert np.array_equal(out[keep], default_avatar.image[keep])
    # inside the mask the pasted noise shows
    x0, y0, side = default_avatar.crop_box
    face = np.zeros_like(keep)
    face[y0:y0 + side, x0:x0 + side] = default_avatar.mask > 0.5
    changed = np.any(out[face] != default_avatar.image[face], axis=-1)
    assert changed.mean() > 0.9
    # the avatar itself is not modified
    assert np.array_equal(default_avatar.image, avatars.load("default").image)


def test_pasting_the_source_crop_changes_little(default_avatar: avatars.Avatar) -> None:
    comp = Compositor(default_avatar, 256)
    out = comp.paste(default_avatar.crop_image(256))
    diff = np.abs(out.astype(int) - default_avatar.image.astype(int))
    assert diff.mean() < 2.0


@pytest.mark.parametrize("size", [256, 512])
def test_crop_to_image_inverts_crop_landmarks(default_avatar: avatars.Avatar, size: int) -> None:
    comp = Compositor(default_avatar, size)
    back = comp.crop_to_image(default_avatar.crop_landmarks(size))
    assert back.shape == (478, 2)
    assert np.abs(back - default_avatar.landmarks[:, :2]).max() < 1e-3


def test_wrong_crop_shape_raises(default_avatar: avatars.Avatar) -> None:
    comp = Compositor(default_avatar, 256)
    for bad in (np.zeros((255, 256, 3), np.uint8), np.zeros((512, 512, 3), np.uint8),
                np.zeros((256, 256), np.uint8), np.zeros((256, 256, 4), np.uint8)):
        with pytest.raises(ValueError):
            comp.paste(bad)
