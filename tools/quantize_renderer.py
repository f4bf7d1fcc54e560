"""Quantise the neural renderer's ONNX graph to int8 (QDQ) and compare it with fp32 on the CPU.

Issue 17, item 4 asks whether ONNX Runtime can run ``renderer_R.onnx`` at half today's CPU time
per frame at the same quality, by quantisation or graph-level changes only (no retraining). This
script makes a candidate and measures it against fp32 *in the same run* (timed calls interleaved,
so a noisy shared machine affects both alike; compare the ratios, not the absolute ms).

    python tools/quantize_renderer.py --size 256 --out /tmp/renderer_256_int8.onnx \
        [--variant conv] [--calib 200] [--seed 0] [--compare] [--png /tmp/q.png]

Variants (``VARIANTS``):
    conv      static int8 QDQ of every Conv only (per-channel int8 weights, uint8 activations);
              GridSample, Resize, the keypoint → flow interpolation (MatMul/IDW) and the output
              blend stay fp32. The default.
    conv_trunk  as ``conv`` but the last, image-facing convolutions (``flow_head``,
              ``decoder.3``) stay fp32.
    all       ORT's default op set (Conv, MatMul, Resize, AveragePool, Clip, Gather, ...) int8.
    dynamic   ``quantize_dynamic`` (MatMul only: int8 weights, activations quantised per call).
    fp32_opt  no quantisation: the graph as ORT_ENABLE_ALL optimises it, saved (for context).

Calibration data are real renderer inputs: the default avatar's prepared source and encoder
features (``NeuralRenderer.prepare``) and driving keypoints from the rig over random
expressions and poses (``sample_coefficients`` / ``sample_pose``, seed ``--seed``); the quality
check uses 64 held-out poses from seed ``--seed + 1000``.

``--compare`` prints one JSON object: per batch size (1 and 8) the median ms per frame of fp32
and of the candidate over ``--reps`` warm interleaved calls and their ratio; quality vs fp32 on
the held-out poses: PSNR (dB, peak 1.0, over all frames' pixels), max abs error (in [0, 1]
units), and PSNR inside the mouth interior (inner-lip polygon of the driving keypoints) and the
eye regions (upper/lower lid polygons, dilated by 2 px).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("conv", "conv_trunk", "all", "dynamic", "fp32_opt")
HELD_OUT_OFFSET = 1000
"""The held-out poses use seed ``seed + HELD_OUT_OFFSET`` (never the calibration seed)."""
IMAGE_FACING_CONVS = ("/flow_head/Conv", "/decoder.3/Conv")
"""The convolutions whose outputs are the flow and the painted pixels (renderer version 2's
exported node names; ``quantize`` raises ValueError when one is missing, so a renamed layer
cannot silently fall back to int8)."""


# ------------------------------------------------------------------ inputs
class RendererInputs:
    """Feeds for ``renderer_R.onnx``: one avatar's prepared source, driving keypoints of random
    rig expressions/poses.

    Args:
        size: R (256 or 512).
        avatar: avatar name (``avatars.load``).
    """

    def __init__(self, size: int = 256, avatar: str = "default"):
        import avatars
        from avatars.rig import Rig
        from engines.renderer import NeuralRenderer

        av = avatars.load(avatar)
        self.size = size
        self.source = NeuralRenderer(size, "onnxruntime").prepare(av)
        self.rig = Rig.for_avatar(av, size)

    def driving(self, n: int, seed: int) -> np.ndarray:
        """float32 [n, 478, 2] driving keypoints (crop pixels) of n random expressions/poses."""
        from avatars.expressions import sample_coefficients, sample_pose

        rng = np.random.default_rng(seed)
        coeffs = np.stack([sample_coefficients(rng) for _ in range(n)])
        poses = np.stack([sample_pose(rng) for _ in range(n)])
        return np.asarray(self.rig.keypoints(coeffs, poses), dtype=np.float32)

    def feeds(self, driving: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's feeds for a batch of driving keypoints [B, 478, 2] (as ``render``)."""
        b = driving.shape[0]
        s = self.source
        return {
            "source": np.ascontiguousarray(np.broadcast_to(s.source, (b, *s.source.shape))),
            "source_features": np.ascontiguousarray(
                np.broadcast_to(s.features, (b, *s.features.shape))),
            "source_keypoints": np.ascontiguousarray(
                np.broadcast_to(s.keypoints, (b, *s.keypoints.shape))),
            "driving_keypoints": np.ascontiguousarray(driving, dtype=np.float32),
        }


def _reader(inputs: RendererInputs, n: int, seed: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Batch-1 feeds over ``n`` driving poses of seed ``seed``."""

        def __init__(self) -> None:
            self._it = iter([inputs.feeds(d[None]) for d in inputs.driving(n, seed)])

        def get_next(self):
            return next(self._it, None)

    return Reader()


# ------------------------------------------------------------------ quantise
def session(path: str | Path, threads: int | None = None, level: str | None = None,
            save_optimized: str | Path | None = None):
    """An ORT CPU session with the runtime's options (``engines.backends.OrtBackend``: no
    spinning; default graph optimisation = ORT_ENABLE_ALL), ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if level is not None:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if save_optimized is not None:
        so.optimized_model_filepath = str(save_optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def quantize(fp32: str | Path, out: str | Path, inputs: RendererInputs, variant: str = "conv",
             calib: int = 200, seed: int = 0) -> Path:
    """Write the ``variant`` of ``fp32`` to ``out`` (calibrated on ``calib`` poses of seed
    ``seed``, MinMax); returns ``out``. Raises ValueError for ``conv_trunk`` when ``fp32`` lacks
    a node of ``IMAGE_FACING_CONVS``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if variant == "fp32_opt":
        session(fp32, level="ORT_ENABLE_ALL", save_optimized=out)
        return out
    fp32, out = Path(fp32).resolve(), out.resolve()
    # the quantiser writes scratch files into the working directory: keep them in a temp one
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        if variant == "dynamic":
            quantize_dynamic(str(pre), str(out), op_types_to_quantize=["MatMul"],
                             per_channel=False, weight_type=QuantType.QInt8)
            return out
        names = {n.name for n in onnx.load(str(pre)).graph.node}
        exclude = list(IMAGE_FACING_CONVS) if variant == "conv_trunk" else []
        missing = [n for n in exclude if n not in names]
        if missing:
            raise ValueError(f"{fp32} has no node {missing} (IMAGE_FACING_CONVS is out of date)")
        ops = None if variant == "all" else ["Conv"]
        quantize_static(
            str(pre), str(out), _reader(inputs, calib, seed),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=ops, nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return out


# ------------------------------------------------------------------ compare
def _psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else float(10 * np.log10(1.0 / mse))


def region_masks(driving: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mouth, eyes) bool [B, R, R]: the inner-lip polygon, and both eyes' lid polygons
    dilated by 2 px, of each row's driving keypoints (crop pixels)."""
    import cv2

    from avatars import topology as t

    mouth_ids = list(t.LIPS_INNER_UPPER) + list(t.LIPS_INNER_LOWER[::-1])
    eye_ids = [list(t.RIGHT_EYE_UPPER) + list(t.RIGHT_EYE_LOWER[::-1]),
               list(t.LEFT_EYE_UPPER) + list(t.LEFT_EYE_LOWER[::-1])]
    kernel = np.ones((5, 5), np.uint8)
    mouth = np.zeros((len(driving), size, size), bool)
    eyes = np.zeros_like(mouth)
    for i, kp in enumerate(driving):
        m = np.zeros((size, size), np.uint8)
        cv2.fillPoly(m, [np.round(kp[mouth_ids]).astype(np.int32)], 1)
        mouth[i] = m > 0
        e = np.zeros((size, size), np.uint8)
        for ids in eye_ids:
            cv2.fillPoly(e, [np.round(kp[ids]).astype(np.int32)], 1)
        eyes[i] = cv2.dilate(e, kernel) > 0
    return mouth, eyes


def quality(ref: np.ndarray, out: np.ndarray, driving: np.ndarray) -> dict[str, float]:
    """PSNR (dB, peak 1) and max abs error of ``out`` vs ``ref`` (float [B, 3, R, R] in
    [0, 1]) over whole frames, the mouth interior and the eyes (``region_masks``)."""
    err2 = ((out.astype(np.float64) - ref) ** 2).mean(axis=1)  # [B, R, R]
    mouth, eyes = region_masks(driving, ref.shape[-1])
    res = {"psnr_db": _psnr(float(err2.mean())),
           "max_abs": float(np.abs(out - ref).max()),
           "psnr_mouth_db": _psnr(float(err2[mouth].mean())) if mouth.any() else None,
           "psnr_eyes_db": _psnr(float(err2[eyes].mean())) if eyes.any() else None,
           "mouth_px": int(mouth.sum()), "eyes_px": int(eyes.sum())}
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}


def timing(paths: dict[str, Path], inputs: RendererInputs, batch: int, reps: int = 30,
           threads: int | None = None, seed: int = 0) -> dict[str, float]:
    """Median ms per frame of each graph over ``reps`` warm calls at ``batch``, the graphs'
    calls interleaved (round-robin) so machine noise hits all alike."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    pool = [inputs.feeds(d) for d in inputs.driving(8 * batch, seed + 7).reshape(8, batch, 478, 2)]
    for s in sessions.values():
        for f in pool[:3]:
            s.run(None, f)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(reps):
        order = list(sessions) if r % 2 == 0 else list(sessions)[::-1]
        for k in order:
            t0 = time.perf_counter()
            sessions[k].run(None, pool[r % len(pool)])
            times[k].append(time.perf_counter() - t0)
    return {k: round(float(np.median(v)) * 1e3 / batch, 3) for k, v in times.items()}


def render_all(path: str | Path, inputs: RendererInputs, driving: np.ndarray,
               batch: int = 8) -> np.ndarray:
    """float32 [N, 3, R, R] frames of ``path`` for every row of ``driving``."""
    s = session(path)
    return np.concatenate([s.run(None, inputs.feeds(driving[i:i + batch]))[0]
                           for i in range(0, len(driving), batch)])


def open_mouth_rows(driving: np.ndarray, k: int = 4) -> np.ndarray:
    """Indices of the ``k`` rows with the largest inner-lip polygon area (px²)."""
    from avatars import topology as t

    ids = list(t.LIPS_INNER_UPPER) + list(t.LIPS_INNER_LOWER[::-1])
    p = driving[:, ids]
    area = 0.5 * np.abs((p[..., 0] * np.roll(p[..., 1], -1, 1)
                         - np.roll(p[..., 0], -1, 1) * p[..., 1]).sum(1))
    return np.argsort(-area)[:k]


def save_side_by_side(path: str | Path, ref: np.ndarray, out: np.ndarray,
                      rows: np.ndarray) -> Path:
    """PNG with one line per row of ``rows``: fp32 | candidate | 4 × |difference|."""
    from PIL import Image

    def u8(x: np.ndarray) -> np.ndarray:
        return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)

    lines = [np.concatenate([u8(ref[i]), u8(out[i]), u8(4 * np.abs(out[i] - ref[i]))], 1)
             for i in rows]
    Image.fromarray(np.concatenate(lines, 0)).save(path)
    return Path(path)


def compare(fp32: str | Path, candidate: str | Path, inputs: RendererInputs, seed: int = 0,
            reps: int = 30, held_out: int = 64, batches: tuple[int, ...] = (1, 8),
            threads: int | None = None, png: str | Path | None = None) -> dict[str, Any]:
    """Timing (``timing``) and quality (``quality``) of ``candidate`` vs ``fp32``."""
    res: dict[str, Any] = {"fp32": str(fp32), "candidate": str(candidate), "threads": threads}
    for b in batches:
        t = timing({"fp32": Path(fp32), "candidate": Path(candidate)}, inputs, b, reps,
                   threads, seed)
        res[f"batch{b}"] = {"fp32_ms_per_frame": t["fp32"],
                            "candidate_ms_per_frame": t["candidate"],
                            "ratio": round(t["candidate"] / t["fp32"], 3), "calls": reps}
    drv = inputs.driving(held_out, seed + HELD_OUT_OFFSET)
    ref = render_all(fp32, inputs, drv)
    out = render_all(candidate, inputs, drv)
    res["quality"] = quality(ref, out, drv)
    res["quality"]["held_out"] = held_out
    if png is not None:
        rows = open_mouth_rows(drv)
        res["png"] = str(save_side_by_side(png, ref, out, rows))
        res["png_quality"] = quality(ref[rows], out[rows], drv[rows])
    return res


def main(argv: list[str] | None = None) -> int:
    from engines.renderer import model_paths

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", required=True, help="quantised .onnx to write")
    ap.add_argument("--variant", default="conv", choices=VARIANTS)
    ap.add_argument("--calib", type=int, default=200, help="calibration poses (batch 1 each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="time and score vs fp32; print JSON")
    ap.add_argument("--reps", type=int, default=30, help="timed calls per graph and batch")
    ap.add_argument("--held-out", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads")
    ap.add_argument("--png", default=None, help="fp32 | candidate | 4x diff for 4 open mouths")
    ap.add_argument("--fp32", default=None, help="fp32 graph (default engines/models)")
    a = ap.parse_args(argv)
    fp32 = Path(a.fp32) if a.fp32 else model_paths(a.size)[1]
    inputs = RendererInputs(a.size)
    t0 = time.perf_counter()
    out = quantize(fp32, a.out, inputs, a.variant, a.calib, a.seed)
    res: dict[str, Any] = {"variant": a.variant, "size": a.size, "calib": a.calib,
                           "seed": a.seed, "out": str(out),
                           "quantize_s": round(time.perf_counter() - t0, 1)}
    if a.compare:
        res.update(compare(fp32, out, inputs, a.seed, a.reps, a.held_out,
                           threads=a.threads, png=a.png))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
