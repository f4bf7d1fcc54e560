"""Export a motion-model checkpoint to ONNX (opset 17, dynamic batch and time).

    python tools/export_motion.py CHECKPOINT.pt [--out engines/models/motion.onnx]

The checkpoint is what ``tools/train_motion.py`` saves: {"dims": MotionDims JSON, "state": state
dict}. The graph's metadata records the dims under ``facecast.motion_dims``. After export the
script checks ONNX Runtime against torch on random features (max abs difference printed; the
export fails above 1e-4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.training.motion_model import MotionDims, MotionModel

OPSET = 17


def load_checkpoint(path: Path) -> MotionModel:
    """Rebuild the model from a checkpoint file."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = MotionModel(MotionDims.from_json(ckpt["dims"]))
    model.load_state_dict(ckpt["state"])
    return model.eval()


def export(model: MotionModel, out: Path) -> float:
    """Write ``model`` to ``out`` as ONNX; returns max |torch − ORT| on a random input."""
    import onnx
    import onnxruntime as ort

    dims = model.dims
    feats = torch.randn(1, 52, dims.n_mels) * 2 - 6
    h = torch.zeros(dims.layers, 1, dims.hidden)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (feats, h), str(out), opset_version=OPSET, dynamo=False,
        input_names=["feats", "h"], output_names=["coeffs", "vad", "visemes", "h_out"],
        dynamic_axes={"feats": {0: "batch", 1: "time"}, "h": {1: "batch"},
                      "coeffs": {0: "batch", 1: "steps"}, "vad": {0: "batch", 1: "steps"},
                      "visemes": {0: "batch", 1: "steps"}, "h_out": {1: "batch"}},
    )
    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "facecast.motion_dims", dims.to_json()
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(feats, h)
    got = sess.run(None, {"feats": feats.numpy(), "h": h.numpy()})
    return max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref, got))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "engines" / "models" / "motion.onnx")
    args = parser.parse_args()
    diff = export(load_checkpoint(args.checkpoint), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); torch vs ORT max |diff| "
          f"{diff:.2e}")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
