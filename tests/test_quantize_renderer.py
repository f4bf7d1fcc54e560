"""tools/quantize_renderer.py: the int8 renderer graph loads, keeps the fp32 graph's I/O shapes,
and stays within a PSNR floor of fp32 (dB, peak 1.0) on held-out poses. No timing assertions
(the shared CI machine is too noisy); a small calibration set keeps it to a few seconds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime.quantization")

ROOT = Path(__file__).resolve().parents[1]
PSNR_FLOOR_DB = 35.0
"""Whole-frame PSNR floor vs fp32 (renderer v2, ``conv_trunk``: 37 dB with this test's 16
calibration poses, 42 dB with 64)."""
REGION_FLOOR_DB = 35.0
"""Eye-region PSNR floor vs fp32 (v2: 40 dB)."""
MOUTH_FLOOR_DB = 25.0
"""Mouth-interior PSNR floor vs fp32: v2 paints a near-black cavity whose uint8 activations
quantise coarsely (28 dB with the first v2 weights; 25.9 dB with the teeth fine-tune, whose pale
upper row beside the cavity widens the range; 20.8 dB if the image-facing convolutions are
quantised too); int8 gains v2 only 5–8% of its time, so serving stays fp32."""


def _tool():
    spec = importlib.util.spec_from_file_location("quantize_renderer",
                                                  ROOT / "tools" / "quantize_renderer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def q():
    return _tool()


@pytest.fixture(scope="module")
def inputs(q):
    return q.RendererInputs(256)


@pytest.fixture(scope="module")
def int8_path(q, inputs, tmp_path_factory):
    from engines.renderer import model_paths

    out = tmp_path_factory.mktemp("q") / "renderer_256_int8.onnx"
    return q.quantize(model_paths(256)[1], out, inputs, "conv_trunk", calib=16, seed=0)


def test_quantised_graph_loads_and_keeps_shapes(q, inputs, int8_path):
    import onnx

    m = onnx.load(str(int8_path))
    ops = {n.op_type for n in m.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    s = q.session(int8_path)
    assert [i.name for i in s.get_inputs()] == ["source", "source_features",
                                                "source_keypoints", "driving_keypoints"]
    for b in (1, 3):
        out = s.run(None, inputs.feeds(inputs.driving(b, seed=5)))[0]
        assert out.shape == (b, 3, 256, 256) and out.dtype == np.float32
        assert np.isfinite(out).all()


def test_quantised_graph_within_psnr_floor(q, inputs, int8_path):
    from engines.renderer import model_paths

    drv = inputs.driving(16, seed=0 + q.HELD_OUT_OFFSET)
    ref = q.render_all(model_paths(256)[1], inputs, drv)
    out = q.render_all(int8_path, inputs, drv)
    res = q.quality(ref, out, drv)
    assert res["psnr_db"] >= PSNR_FLOOR_DB, res
    assert res["psnr_mouth_db"] is not None and res["psnr_mouth_db"] >= MOUTH_FLOOR_DB, res
    assert res["psnr_eyes_db"] is not None and res["psnr_eyes_db"] >= REGION_FLOOR_DB, res


def test_region_masks_cover_open_mouth_and_eyes(q, inputs):
    drv = inputs.driving(8, seed=3)
    mouth, eyes = q.region_masks(drv, 256)
    rows = q.open_mouth_rows(drv, 2)
    assert all(mouth[i].sum() > 20 for i in rows)  # px
    assert (eyes.sum(axis=(1, 2)) > 20).all()


def test_cli_compare_prints_json(q, tmp_path, capsys):
    rc = q.main(["--size", "256", "--out", str(tmp_path / "r.onnx"), "--calib", "4",
                 "--compare", "--reps", "2", "--held-out", "8",
                 "--png", str(tmp_path / "r.png")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["variant"] == "conv" and (tmp_path / "r.png").is_file()
    for b in ("batch1", "batch8"):
        assert res[b]["fp32_ms_per_frame"] > 0 and res[b]["ratio"] > 0
    assert res["quality"]["psnr_db"] > 30.0
