"""The visible disclosure (issue 19, item 2): an "AI-generated" badge in every frame of serve,
cam, kiosk and render by default, away from the face, legible at 256 px; off only when asked."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

import avatars
from runtime.compositor import Compositor
from runtime.provenance.disclosure import CORNERS, MASK_CLEAR, Badge, badge_box, draw_badge


@pytest.fixture(scope="module")
def default() -> avatars.Avatar:
    return avatars.load("default")


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def test_the_badge_is_drawn_away_from_the_face_and_nothing_else_changes(default) -> None:
    out = draw_badge(default.image, Badge(), avoid=default.crop_box)
    x0, y0, x1, y1 = badge_box(default.image.shape, Badge(), default.crop_box)
    cx, cy, side = default.crop_box
    assert x0 >= cx + side or y0 >= cy + side or x1 <= cx or y1 <= cy  # clear of the crop
    outside = np.ones(out.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], default.image[outside])
    plate = _luma(out[y0:y1, x0:x1].astype(np.float32))
    assert np.median(plate) < 60 and (plate > 200).sum() > 50  # a dark plate, white text
    assert not np.array_equal(default.image, out)  # the avatar itself is untouched


def test_legible_at_256_px(default) -> None:
    import cv2

    small = cv2.resize(default.image, (256, 256), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = badge_box(small.shape, Badge())
    assert y1 - y0 >= 9 + 2 * 3  # at least a 9-px cap height plus its margins
    text = _luma(draw_badge(small, Badge())[y0:y1, x0:x1].astype(np.float32))
    assert (text > 200).sum() > 20


def test_a_corner_over_the_face_is_skipped_and_bad_badges_refused() -> None:
    image = np.full((200, 200, 3), 128, np.uint8)
    box = badge_box(image.shape, Badge(corner="bottom-right"), avoid=(100, 100, 100))
    assert box[0] < 100  # bottom-right is the face: bottom-left instead
    with pytest.raises(ValueError, match="fits no corner"):
        badge_box(image.shape, Badge(), avoid=(0, 0, 200))
    for bad in ({"corner": "middle"}, {"text": "KI-generiert ✓"}, {"text": " "}):
        with pytest.raises(ValueError):
            Badge(**bad)
    assert set(CORNERS) == {"bottom-right", "bottom-left", "top-right", "top-left"}


def test_a_tight_portrait_gets_the_badge_where_the_mask_is_zero(default) -> None:
    """A photo cropped to the render crop has no corner clear of it: the badge goes where the
    paste-back mask is 0, and every pasted frame keeps it."""
    x0, y0, side = default.crop_box
    # The face's mask inside an ellipse: a portrait whose corners hold hair and background.
    yy, xx = (np.mgrid[:side, :side] + 0.5) / side - 0.5
    ellipse = ((xx / 0.3) ** 2 + (yy / 0.38) ** 2 <= 1.0).astype(np.float32)
    tight = dataclasses.replace(
        default, image=np.ascontiguousarray(default.image[y0:y0 + side, x0:x0 + side]),
        crop_box=(0, 0, side), mask=default.mask * ellipse)
    with pytest.raises(ValueError, match="fits no corner"):
        badge_box(tight.image.shape, Badge(), tight.crop_box)
    bx0, by0, bx1, by1 = badge_box(tight.image.shape, Badge(), tight.crop_box, tight.mask)
    assert not (tight.mask[by0:by1, bx0:bx1] >= MASK_CLEAR).any()
    comp = Compositor(tight, 256, Badge())
    for value in (0, 255):
        frame = comp.paste(np.full((256, 256, 3), value, np.uint8))
        np.testing.assert_array_equal(frame[by0:by1, bx0:bx1], comp.image[by0:by1, bx0:bx1])
    plate = _luma(comp.image[by0:by1, bx0:bx1].astype(np.float32))
    assert np.median(plate) < 60 and (plate > 200).sum() > 20
    full = np.ones((side, side), np.float32)
    with pytest.raises(ValueError, match="fits no corner"):
        badge_box(tight.image.shape, Badge(), tight.crop_box, full)


def test_the_compositor_bakes_it_in_and_stays_exact_elsewhere(default) -> None:
    plain = Compositor(default, 256)
    badged = Compositor(default, 256, Badge())
    crop = np.zeros((256, 256, 3), np.uint8)
    a, b = plain.paste(crop), badged.paste(crop)
    x0, y0, x1, y1 = badge_box(default.image.shape, Badge(), default.crop_box)
    diff = np.any(a != b, axis=-1)
    assert diff[y0:y1, x0:x1].any()
    diff[y0:y1, x0:x1] = False
    assert not diff.any()  # only the badge differs


def test_render_has_it_by_default_and_not_with_no_badge(tmp_path, default) -> None:
    import av

    from runtime.cli import main

    x0, y0, x1, y1 = badge_box(default.image.shape, Badge(), default.crop_box)
    plates = {}
    for name, extra in (("on", []), ("off", ["--no-badge"])):
        out = tmp_path / f"{name}.mp4"
        assert main(["render", "--text", "Hi.", "--out", str(out), *extra]) == 0
        with av.open(str(out)) as c:
            frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
        plates[name] = _luma(frame[y0:y1, x0:x1].astype(np.float32))
    source = _luma(default.image[y0:y1, x0:x1].astype(np.float32))
    assert np.median(plates["on"]) < 60 and (plates["on"] > 200).sum() > 50
    assert abs(np.median(plates["off"]) - np.median(source)) < 8


def test_served_frames_carry_it() -> None:
    from runtime.serve.client import AvatarClient
    from runtime.serve.server import ServerConfig, serve_in_thread

    default = avatars.load("default")
    x0, y0, x1, y1 = badge_box(default.image.shape, Badge(), default.crop_box)
    handle = serve_in_thread(ServerConfig(port=0))
    try:
        async def first_frame() -> np.ndarray:
            async with AvatarClient(handle.ws_url, keep_frames=True) as c:
                await c.start_media()
                await c.wait_video(frames=5)
                return c.received.frames[-1]

        frame = asyncio.run(asyncio.wait_for(first_frame(), 60))
    finally:
        handle.stop()
    plate = _luma(frame[y0:y1, x0:x1].astype(np.float32))
    assert np.median(plate) < 70 and (plate > 180).sum() > 30
