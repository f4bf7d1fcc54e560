"""The runtime renderer (engines.renderer) on the committed graphs: the ONNX files match the torch
checkpoint they were exported from, batch rows are independent (mixed avatars), bad input is
refused. Runs against whatever ``engines/models`` (or ``$FACECAST_MODELS_DIR``) holds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import avatars
from avatars.expressions import sample_coefficients, sample_pose
from avatars.rig import Rig
from engines.renderer import NeuralRenderer, to_uint8


def _driving(avatar: avatars.Avatar, size: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coeffs = np.stack([sample_coefficients(rng) for _ in range(n)])
    poses = np.stack([sample_pose(rng) for _ in range(n)])
    coeffs[0, 0] = 0.8  # an open jaw in the first row, so the mouth interior is exercised
    return Rig.for_avatar(avatar, size).keypoints(coeffs, poses)


@pytest.fixture(scope="module")
def hopper(tmp_path_factory: pytest.TempPathFactory) -> avatars.Avatar:
    """A second avatar, enrolled from matplotlib's Grace Hopper portrait."""
    cbook = pytest.importorskip("matplotlib.cbook")
    from avatars.enroll import EnrollOptions, enroll

    image = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    folder = enroll(image, "hopper", tmp_path_factory.mktemp("avatars"),
                    EnrollOptions(consent="Public-domain U.S. Navy portrait; test avatar."))
    return avatars.load(str(folder))


@pytest.mark.parametrize("size", [256, 512])
def test_onnx_matches_the_torch_checkpoint(default_avatar: avatars.Avatar, size: int) -> None:
    pytest.importorskip("torch")
    drv = _driving(default_avatar, size, 3, seed=size)
    ort = NeuralRenderer(size, "onnxruntime")
    ref = NeuralRenderer(size, "torch")
    assert ort.backend == "onnxruntime-cpu" and ref.backend == "torch-cpu"
    a = ort.render(ort.prepare(default_avatar), drv)
    b = ref.render(ref.prepare(default_avatar), drv)
    assert a.shape == b.shape == (3, 3, size, size) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    assert np.abs(a - b).max() < 1e-3


def test_mixed_avatar_batch_equals_single_renders(default_avatar: avatars.Avatar,
                                                  hopper: avatars.Avatar) -> None:
    r = NeuralRenderer(256, "onnxruntime")
    src_a, src_b = r.prepare(default_avatar), r.prepare(hopper)
    assert not np.allclose(src_a.source, src_b.source)
    drv_a = _driving(default_avatar, 256, 2, seed=1)
    drv_b = _driving(hopper, 256, 2, seed=2)
    batch = r.render([src_a, src_b, src_a, src_b],
                     np.stack([drv_a[0], drv_b[0], drv_a[1], drv_b[1]]))
    alone = [r.render(src_a, drv_a[:1])[0], r.render(src_b, drv_b[:1])[0],
             r.render(src_a, drv_a[1:])[0], r.render(src_b, drv_b[1:])[0]]
    for row, single in zip(batch, alone, strict=True):
        assert np.abs(row - single).max() < 1e-4
    # rows really are different avatars
    assert np.abs(batch[0] - batch[1]).mean() > 0.02
    u8 = to_uint8(batch)
    assert u8.shape == (4, 256, 256, 3) and u8.dtype == np.uint8


def test_bad_input_raises(default_avatar: avatars.Avatar) -> None:
    r = NeuralRenderer(256, "onnxruntime")
    src = r.prepare(default_avatar)
    with pytest.raises(ValueError, match="478, 2"):
        r.render(src, np.zeros((2, 468, 2), np.float32))
    with pytest.raises(ValueError, match="478, 2"):
        r.render(src, np.zeros((478, 2), np.float32))
    with pytest.raises(ValueError, match="sources"):
        r.render([src, src], np.zeros((3, 478, 2), np.float32))
    with pytest.raises(ValueError, match="size"):
        NeuralRenderer(300, "onnxruntime")
    with pytest.raises(ValueError, match="backend"):
        NeuralRenderer(256, "openvino")
    with pytest.raises(FileNotFoundError):
        NeuralRenderer(256, "onnxruntime", models_dir=Path("/nonexistent/models"))


def test_tensorrt_without_tensorrt_is_a_clear_error() -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    from engines.tensorrt.build import TensorRTUnavailable

    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        NeuralRenderer(256, "tensorrt")
