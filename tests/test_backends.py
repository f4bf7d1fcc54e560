"""engines.backends / engines.tensorrt.build without a GPU: ONNX Runtime backend equals a plain
session, `auto` falls back to ONNX Runtime, TensorRT errors are clear, the cache key follows
the ONNX bytes, optimisation profiles come out right."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from engines.backends import Backend, OrtBackend, open_backend, ort_cuda_available
from engines.tensorrt.build import (
    DEFAULT_DIM_RANGES,
    TensorRTUnavailable,
    build_engines_main,
    cache_dir,
    engine_cache_key,
    find_plan,
    input_profiles,
    plan_path,
)

MOTION = Path(__file__).resolve().parents[1] / "engines" / "models" / "motion.onnx"
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _motion_feeds(batch: int, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"feats": rng.normal(-2.0, 1.0, (batch, frames, 80)).astype(np.float32),
            "h": rng.normal(0.0, 0.1, (1, batch, 128)).astype(np.float32)}


def test_ort_backend_matches_plain_session() -> None:
    backend = OrtBackend(MOTION)
    assert isinstance(backend, Backend)
    assert backend.name == "onnxruntime-cpu"
    assert backend.input_names == ["feats", "h"]
    assert backend.output_names[-1] == "h_out"
    session = ort.InferenceSession(str(MOTION), providers=["CPUExecutionProvider"])
    for batch, frames in ((1, 4), (3, 27)):
        feeds = _motion_feeds(batch, frames)
        got = backend.run(feeds)
        want = session.run(None, feeds)
        assert len(got) == len(want) == len(backend.output_names)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.shape[0] in (batch, 1)
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)


def test_ort_backend_rejects_wrong_feeds() -> None:
    backend = OrtBackend(MOTION, threads=1)
    feeds = _motion_feeds(1, 4)
    with pytest.raises(ValueError, match="missing"):
        backend.run({"feats": feeds["feats"]})
    with pytest.raises(ValueError, match="unexpected"):
        backend.run({**feeds, "extra": feeds["h"]})
    with pytest.raises(FileNotFoundError):
        OrtBackend(MOTION.with_name("absent.onnx"))


def test_auto_is_onnxruntime_cpu_here() -> None:
    if HAS_TRT or ort_cuda_available():
        pytest.skip("this machine has TensorRT or CUDA: auto picks those")
    backend = open_backend(MOTION, "auto")
    assert isinstance(backend, OrtBackend) and backend.name == "onnxruntime-cpu"
    assert open_backend(MOTION, "onnxruntime").name == "onnxruntime-cpu"
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider"):
        open_backend(MOTION, "cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        open_backend(MOTION, "openvino")  # type: ignore[arg-type]


def test_tensorrt_without_tensorrt_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    if HAS_TRT:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed: pip install"):
        open_backend(MOTION, "tensorrt")
    assert find_plan(MOTION) is None
    assert build_engines_main([MOTION], max_batch=8) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("TensorRT is not installed")
    assert "NVIDIA GPU" in err[0]


def test_cache_key_follows_onnx_bytes_gpu_and_version(tmp_path: Path) -> None:
    copy = tmp_path / "motion.onnx"
    shutil.copyfile(MOTION, copy)
    key = engine_cache_key(copy, "NVIDIA H100 80GB HBM3", "9.0", "10.8.0")
    assert key == engine_cache_key(MOTION, "NVIDIA H100 80GB HBM3", "9.0", "10.8.0")
    assert len(key) == 32 and int(key, 16) >= 0
    with open(copy, "ab") as f:
        f.write(b"\0")
    assert engine_cache_key(copy, "NVIDIA H100 80GB HBM3", "9.0", "10.8.0") != key
    assert engine_cache_key(MOTION, "NVIDIA L4", "8.9", "10.8.0") != key
    assert engine_cache_key(MOTION, "NVIDIA H100 80GB HBM3", "9.0", "10.9.0") != key
    with pytest.raises(FileNotFoundError):
        engine_cache_key(tmp_path / "absent.onnx", "gpu", "9.0", "10.8.0")


def test_cache_dir_and_plan_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECAST_ENGINE_DIR", str(tmp_path / "engines"))
    assert cache_dir() == tmp_path / "engines"
    assert plan_path(MOTION, "abc") == tmp_path / "engines" / "motion-abc.plan"
    monkeypatch.delenv("FACECAST_ENGINE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "facecast" / "engines"


def test_motion_profiles_share_the_batch_axis() -> None:
    profiles = input_profiles(MOTION, 1, 8, 64)
    t_lo, t_opt, t_hi = DEFAULT_DIM_RANGES["time"]
    assert profiles["feats"] == ((1, t_lo, 80), (8, t_opt, 80), (64, t_hi, 80))
    # h is [layers, batch, hidden]: its "batch" axis follows feats' dim 0.
    assert profiles["h"] == ((1, 1, 128), (1, 8, 128), (1, 64, 128))
    assert input_profiles(MOTION, 2, 2, 4, {"time": (5, 6, 7)})["feats"] == (
        (2, 5, 80), (2, 6, 80), (4, 7, 80))
    with pytest.raises(ValueError, match="min_batch"):
        input_profiles(MOTION, 4, 2, 8)


def test_unknown_dynamic_dim_needs_a_range(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "width"])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="'width'.*dim_ranges"):
        input_profiles(path, 1, 2, 4)
    assert input_profiles(path, 1, 2, 4, {"width": (1, 8, 16)}) == {
        "x": ((1, 1), (2, 8), (4, 16))}
