"""TensorRT engines on a GPU: build motion.onnx, load it through the cache, compare with ONNX
Runtime on the same batches. Skipped where TensorRT is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU)")

from engines.backends import OrtBackend, TensorRTBackend, open_backend
from engines.tensorrt.build import (
    TensorRTUnavailable,
    build_engine,
    find_plan,
    gpu_info,
    read_sidecar,
)

MOTION = Path(__file__).resolve().parents[1] / "engines" / "models" / "motion.onnx"


@pytest.fixture()
def engine_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    try:
        gpu_info()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("FACECAST_ENGINE_DIR", str(tmp_path))
    return tmp_path


def _feeds(batch: int, frames: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"feats": rng.normal(-2.0, 1.0, (batch, frames, 80)).astype(np.float32),
            "h": rng.normal(0.0, 0.1, (1, batch, 128)).astype(np.float32)}


@pytest.mark.parametrize(("fp16", "atol"), [(False, 2e-3), (True, 5e-2)])
def test_motion_engine_matches_onnxruntime(engine_dir: Path, fp16: bool, atol: float) -> None:
    assert find_plan(MOTION) is None
    plan = build_engine(MOTION, min_batch=1, opt_batch=2, max_batch=4, fp16=fp16)
    assert plan.parent == engine_dir and plan.is_file()
    assert find_plan(MOTION) == plan
    meta = read_sidecar(plan)
    assert meta["tensorrt"] == trt.__version__ and meta["fp16"] is fp16
    assert meta["profiles"]["h"]["max"] == [1, 4, 128]

    backend = open_backend(MOTION, "auto")
    assert isinstance(backend, TensorRTBackend) and backend.name == "tensorrt"
    ort_backend = OrtBackend(MOTION)
    assert backend.input_names == ort_backend.input_names
    assert sorted(backend.output_names) == sorted(ort_backend.output_names)
    for batch, frames, seed in ((1, 4, 0), (3, 40, 1), (4, 3, 2)):
        feeds = _feeds(batch, frames, seed)
        got = dict(zip(backend.output_names, backend.run(feeds)))
        want = dict(zip(ort_backend.output_names, ort_backend.run(feeds)))
        for name, w in want.items():
            assert got[name].shape == w.shape, name
            np.testing.assert_allclose(got[name], w, rtol=0, atol=atol, err_msg=name)
    with pytest.raises(ValueError, match="profile"):
        backend.run(_feeds(5, 4, 3))
    backend.close()


def test_missing_plan_says_build_engines(engine_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="facecast build-engines"):
        TensorRTBackend(MOTION)
