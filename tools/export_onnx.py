"""Export the renderer checkpoint to ONNX (opset 17, dynamic batch, fixed R).

    python tools/export_onnx.py [--checkpoint runs/renderer/renderer.pt] [--out engines/models]
                                [--sizes 256 512] [--check]

Writes, per R, ``renderer_encoder_R.onnx`` (source [B,3,R,R] → source_features [B,F,G,G]) and
``renderer_R.onnx`` (source, source_features, source_keypoints [B,478,2], driving_keypoints
[B,478,2] → frames [B,3,R,R]); the dimensions JSON is stored in each file's metadata
(``facecast.dims``) with the checkpoint step and training portraits. ``--check`` compares torch and
ONNX Runtime on a real avatar with random driving keypoints (max abs difference printed as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.training.renderer_model import load_checkpoint

OPSET = 17
ENCODER_INPUTS = ("source",)
ENCODER_OUTPUTS = ("source_features",)
RENDER_INPUTS = ("source", "source_features", "source_keypoints", "driving_keypoints")
RENDER_OUTPUTS = ("frames",)


def example_inputs(size: int, feature_channels: int, grid: int, batch: int = 2,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random but plausible inputs: a noise image, default-avatar keypoints, jittered driving."""
    import avatars

    gen = torch.Generator().manual_seed(seed)
    av = avatars.load("default")
    kp = torch.from_numpy(av.crop_landmarks(size)[:, :2])[None].repeat(batch, 1, 1)
    src = torch.rand(batch, 3, size, size, generator=gen)
    feats = torch.randn(batch, feature_channels, grid, grid, generator=gen)
    drv = kp + torch.randn(kp.shape, generator=gen) * (size / 128)
    return src, feats, kp, drv


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    model = onnx.load(str(path))
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def export(checkpoint: Path, out_dir: Path, size: int) -> tuple[Path, Path]:
    """Export encoder and renderer at output size ``size``; returns their paths."""
    encoder, renderer = load_checkpoint(str(checkpoint), size=size)
    dims = renderer.dims
    ckpt = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    meta = {"facecast.dims": dims.to_json(), "facecast.step": str(ckpt.get("step", "")),
            "facecast.portraits": json.dumps(ckpt.get("portraits", []))}
    src, feats, skp, dkp = example_inputs(size, dims.feature_channels, dims.motion_grid)
    out_dir.mkdir(parents=True, exist_ok=True)
    enc_path = out_dir / f"renderer_encoder_{size}.onnx"
    ren_path = out_dir / f"renderer_{size}.onnx"
    with torch.no_grad():
        torch.onnx.export(encoder, (src,), str(enc_path), opset_version=OPSET, dynamo=False,
                          input_names=list(ENCODER_INPUTS), output_names=list(ENCODER_OUTPUTS),
                          dynamic_axes={n: {0: "batch"} for n in ENCODER_INPUTS + ENCODER_OUTPUTS})
        torch.onnx.export(renderer, (src, feats, skp, dkp), str(ren_path), opset_version=OPSET,
                          dynamo=False, input_names=list(RENDER_INPUTS),
                          output_names=list(RENDER_OUTPUTS),
                          dynamic_axes={n: {0: "batch"} for n in RENDER_INPUTS + RENDER_OUTPUTS})
    _add_metadata(enc_path, meta)
    _add_metadata(ren_path, meta)
    return enc_path, ren_path


def compare(checkpoint: Path, enc_path: Path, ren_path: Path, size: int) -> dict[str, float]:
    """Max abs difference between torch and ONNX Runtime (CPU) on the same inputs."""
    import onnxruntime as ort

    import avatars
    from engines.training.renderer_model import to_tensor_image

    encoder, renderer = load_checkpoint(str(checkpoint), size=size)
    av = avatars.load("default")
    src = to_tensor_image(av.crop_image(size)).repeat(3, 1, 1, 1)
    kp = torch.from_numpy(av.crop_landmarks(size)[:, :2])[None].repeat(3, 1, 1)
    gen = torch.Generator().manual_seed(1)
    dkp = kp + torch.randn(kp.shape, generator=gen) * (size / 100)
    with torch.no_grad():
        feats = encoder(src)
        frames = renderer(src, feats, kp, dkp)
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    ren = ort.InferenceSession(str(ren_path), providers=["CPUExecutionProvider"])
    f_ort = enc.run(None, {"source": src.numpy()})[0]
    o_ort = ren.run(None, {"source": src.numpy(), "source_features": f_ort,
                           "source_keypoints": kp.numpy(), "driving_keypoints": dkp.numpy()})[0]
    return {"size": size, "features_max_abs": float(np.abs(f_ort - feats.numpy()).max()),
            "frames_max_abs": float(np.abs(o_ort - frames.numpy()).max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/renderer/renderer.pt")
    ap.add_argument("--out", default="engines/models")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    for size in args.sizes:
        enc_path, ren_path = export(Path(args.checkpoint), Path(args.out), size)
        info = {"encoder": str(enc_path), "renderer": str(ren_path),
                "bytes": enc_path.stat().st_size + ren_path.stat().st_size}
        if args.check:
            info.update(compare(Path(args.checkpoint), enc_path, ren_path, size))
        print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
