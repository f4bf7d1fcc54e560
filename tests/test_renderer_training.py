"""Renderer version 2 and its training data (engines.training.renderer_model, tools/renderer_data,
tools/train_renderer): shapes, the IDW formula, warm start, identity variety, a real short run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import avatars
from avatars import topology as T
from avatars.bundle import inter_ocular_distance
from engines.training.losses import FOCUS_GAIN, focus_map
from engines.training.renderer_model import (
    RendererDims,
    build,
    face_colours,
    grid_centres,
    idw_displacement,
    load_checkpoint,
    normalise,
    sample_bilinear,
    warm_start,
)
from tools.renderer_data import morph_landmarks, restyle

ROOT = Path(__file__).resolve().parents[1]
SMALL = RendererDims(size=256, motion_grid=32, feature_channels=4, unet_channels=(8, 8, 8),
                     decoder_channels=4, idw_grid=16)


def test_idw_is_shepard_power_two() -> None:
    gen = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 50, 2, generator=gen) * 2 - 1
    val = torch.randn(2, 50, 2, generator=gen)
    grid = grid_centres(16)
    d2 = ((grid[None, :, None] - pts[:, None]) ** 2).sum(-1) + 2.5e-4
    w = 1 / d2 ** 2
    ref = (w / w.sum(-1, keepdim=True)) @ val
    assert torch.allclose(idw_displacement(pts, val, grid, 2.5e-4), ref, atol=2e-4)


def test_sample_bilinear_is_grid_sample_with_border_padding() -> None:
    """The gather-based warp gives grid_sample's values (bilinear, border, align_corners=False),
    on a non-square image, with points outside it and on pixel centres."""
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 5, 20, 24, generator=gen)
    points = torch.rand(2, 2, 7, 9, generator=gen) * torch.tensor([30.0, 26.0])[None, :, None, None]
    points = points - torch.tensor([3.0, 3.0])[None, :, None, None]
    points[0, :, 0, 0] = torch.tensor([23.0, 19.0])  # the last pixel's centre
    size = torch.tensor([24.0, 20.0])[None, :, None, None]
    grid = ((points + 0.5) * 2.0 / size - 1.0).permute(0, 2, 3, 1)
    ref = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(sample_bilinear(image, points), ref, atol=1e-5)
    # The gathers the ONNX graph is exported with.
    with mock.patch("torch.onnx.is_in_onnx_export", return_value=True):
        assert torch.allclose(sample_bilinear(image, points), ref, atol=1e-5)


@pytest.mark.parametrize("size", [256, 512])
def test_decoder_input_is_the_plain_first_layer(size: int) -> None:
    """The decoder's first layer, split into parts for speed, equals the 1×1 conv over
    [u1, pixel_unshuffle(avg_pool(warped)), maps, colours broadcast] it stands for."""
    dims = SMALL.with_size(size)
    _, ren = build(dims)
    gen = torch.Generator().manual_seed(2)
    for prm in ren.decoder[0].parameters():
        prm.data = torch.randn(prm.shape, generator=gen)
    g = dims.motion_grid
    u1 = torch.randn(2, dims.unet_channels[0], g, g, generator=gen)
    warped = torch.rand(2, 3, size, size, generator=gen)
    maps = torch.randn(2, 8, g, g, generator=gen)
    colours = torch.rand(2, 9, generator=gen)
    pooled = F.avg_pool2d(warped, size // (2 * g))
    plain = ren.decoder[0](torch.cat([u1, F.pixel_unshuffle(pooled, 2), maps,
                                      colours[:, :, None, None].expand(-1, -1, g, g)], 1))
    with torch.no_grad():
        split = ren._decoder_input(u1, warped, maps, colours)
    assert torch.allclose(split, plain, atol=1e-4)


@pytest.mark.parametrize("size", [256, 512])
def test_forward_shapes_and_neutral_identity(default_avatar: avatars.Avatar, size: int) -> None:
    enc, ren = build(SMALL.with_size(size))
    src = torch.rand(2, 3, size, size)
    kp = torch.from_numpy(default_avatar.crop_landmarks(size)[:, :2])[None].repeat(2, 1, 1)
    with torch.no_grad():
        out = ren.forward_train(src, enc(src), kp, kp + 1.0)
    assert out["frames"].shape == (2, 3, size, size)
    assert out["disp"].shape == (2, 2, 32, 32)
    assert out["mask"].shape == (2, 1, 64, 64) and out["painted"].shape == (2, 3, 64, 64)
    assert torch.isfinite(out["frames"]).all()


def test_face_colours_come_from_the_face(default_avatar: avatars.Avatar) -> None:
    """Cheek, lip and lid colours are read at mesh vertices of the source, not around the mouth:
    painting the crop's clothes and background another colour leaves them unchanged."""
    crop = default_avatar.crop_image(256).astype(np.float32) / 255.0
    kp = default_avatar.crop_landmarks(256)[:, :2]
    src = torch.from_numpy(crop).permute(2, 0, 1)[None]
    other = src.clone()
    other[:, :, 220:] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]  # the clothes turn blue
    k = normalise(torch.from_numpy(kp)[None], 256)
    a, b = face_colours(src, k), face_colours(other, k)
    assert a.shape == (1, 9) and torch.allclose(a, b)
    cheeks, lips = a[0, :3], a[0, 3:6]
    assert lips[0] - lips[2] > cheeks[0] - cheeks[2] - 0.05  # lips at least as red as skin


def test_version_one_checkpoints_are_refused(tmp_path: Path) -> None:
    dims = json.loads(SMALL.to_json())
    dims.pop("version")
    dims.pop("idw_grid")
    with pytest.raises(ValueError, match="version 1"):
        RendererDims.from_json(json.dumps(dims))


def test_warm_start_copies_the_shared_layers() -> None:
    enc, ren = build(RendererDims())
    f = ren.dims.feature_channels
    v1_enc = {k: torch.randn(v.shape[0] * 2 if k.startswith("net.4") else v.shape[0],
                             *v.shape[1:]) for k, v in enc.state_dict().items()}
    v1_ren = {k: torch.randn_like(v) for k, v in ren.state_dict().items()
              if k.startswith(("enc2", "enc3", "up", "dec2", "dec1"))}
    v1_ren["enc1.0.0.weight"] = torch.randn(32, 2 + 4 + 3 + 16, 3, 3)
    v1_ren["flow_head.weight"] = torch.randn(2, 32, 3, 3)
    copied = warm_start(ren, enc, {"encoder": v1_enc, "renderer": v1_ren})
    assert "enc1.0.0.weight" in copied and "enc2.0.0.weight" in copied
    w = ren.state_dict()["enc1.0.0.weight"]
    assert torch.equal(w[:, :2], v1_ren["enc1.0.0.weight"][:, :2])  # displacement
    assert torch.equal(w[:, 5 + f:9 + f], v1_ren["enc1.0.0.weight"][:, 2:6])  # mouth maps
    assert not w[:, 9 + f:].any()  # eye maps start at zero
    assert torch.equal(ren.state_dict()["flow_head.weight"],
                       v1_ren["flow_head.weight"][:, :, 1:2, 1:2])


def test_morph_makes_another_face_shape(default_avatar: avatars.Avatar) -> None:
    lm = default_avatar.landmarks
    rng = np.random.default_rng(0)
    shapes = [morph_landmarks(lm, rng) for _ in range(4)]
    iod = inter_ocular_distance(lm[:, :2])
    for m in shapes:
        assert m.shape == (478, 3) and m.dtype == np.float32
        move = np.linalg.norm(m[:, :2] - lm[:, :2], axis=1) / iod
        assert 0.005 < move.mean() < 0.1 and move.max() < 0.3
        assert np.array_equal(m[:, 2], lm[:, 2].astype(np.float32))
        # the mouth corners stay left/right of each other: no fold
        assert m[T.MOUTH_CORNER_LEFT, 0] > m[T.MOUTH_CORNER_RIGHT, 0]
    assert not np.allclose(shapes[0], shapes[1])


def test_restyle_and_focus(default_avatar: avatars.Avatar) -> None:
    crop = default_avatar.crop_image(256)
    kp = default_avatar.crop_landmarks(256)[:, :2]
    rng = np.random.default_rng(1)
    outs = [restyle(crop, kp, rng) for _ in range(6)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    assert np.mean([np.abs(o.astype(int) - crop).mean() for o in outs]) > 5
    focus = focus_map(256, kp, np.zeros((256, 256), np.float32))
    eye = kp[T.RIGHT_EYE_TOP]
    assert focus[int(eye[1]) + 1, int(eye[0])] == 1 + FOCUS_GAIN
    assert focus[5, 5] == 1.0


def test_train_renderer_runs_and_exports(tmp_path: Path) -> None:
    """Two steps of the real training script on the installed training portraits (the small
    model), a checkpoint that loads, and an ONNX export that matches it."""
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools" / "train_renderer.py"), "--out", str(out),
           "--steps", "2", "--batch", "2", "--small", "--workers", "0", "--save-every", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "astronaut" in done.stdout and "grace_hopper" not in done.stdout  # held out
    _, ren = load_checkpoint(str(out / "renderer.pt"))
    assert ren.dims.version == 2 and ren.dims.motion_grid == 32
    exp = subprocess.run([sys.executable, str(ROOT / "tools" / "export_onnx.py"), "--checkpoint",
                          str(out / "renderer.pt"), "--out", str(tmp_path / "onnx"), "--sizes",
                          "256", "--check"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=False)
    assert exp.returncode == 0, exp.stderr[-2000:]
    info = json.loads(exp.stdout.strip().splitlines()[-1])
    assert info["frames_max_abs"] < 1e-4
