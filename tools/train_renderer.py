"""Train the neural renderer on teacher pairs (``tools/renderer_data.py``).

    python tools/train_renderer.py --out runs/renderer [--steps 3600] [--minutes 100] [--seed 0]
        [--warm-start V1.pt | --init V2.pt] [--lr 2e-3]

Seeded and reproducible on one machine (one data worker with its own seeded generator; torch's
CPU kernels are deterministic for these ops). On the 2-core reference machine a step at batch 12
takes about 1.2 s, so the default run finishes well under two hours; ``--minutes`` stops early at
a step boundary and still writes the checkpoint. Writes ``OUT/renderer.pt`` (keys ``dims``,
``encoder``, ``renderer``, ``step``, ``portraits``) every ``--save-every`` steps and at the end,
and ``OUT/log.jsonl`` with the losses. Export with ``tools/export_onnx.py``.

Training identities are every available portrait of ``runtime/evals/portraits.py`` that is not held out,
and its mirror, each sample made into a new identity by ``tools/renderer_data`` (shape morph and
restyling). ``--warm-start`` copies the layers a version-1 checkpoint shares with version 2
(``renderer_model.warm_start``).

Losses: ``engines.training.losses.renderer_losses`` (shared with ``facecast adapt``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.training.losses import renderer_losses
from engines.training.renderer_model import RendererDims, build, warm_start
from runtime.evals import portraits as portrait_registry
from tools.renderer_data import Face, make_sample, prepare_faces


class TeacherPairs(torch.utils.data.IterableDataset):
    """Endless stream of teacher pairs as tensors; seeded per worker."""

    def __init__(self, faces: list[Face], size: int, seed: int):
        super().__init__()
        self.faces, self.size, self.seed = faces, size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid])
        while True:
            face = self.faces[int(rng.integers(len(self.faces)))]
            s = make_sample(face, rng, self.size)
            yield {
                "source": torch.from_numpy(s.source).permute(2, 0, 1),
                "skp": torch.from_numpy(s.source_keypoints),
                "dkp": torch.from_numpy(s.driving_keypoints),
                "target": torch.from_numpy(s.target).permute(2, 0, 1),
                "flow": torch.from_numpy(s.flow).permute(2, 0, 1),
                "alpha": torch.from_numpy(s.alpha)[None],
                "focus": torch.from_numpy(s.focus)[None],
            }


def training_portraits() -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB image) of every available portrait not held out for evaluation."""
    out = []
    for p in portrait_registry.available():
        if not p.heldout:
            out.append((p.name, portrait_registry.load_portrait(p)))
    if not out:
        raise SystemExit("no training portraits available (see runtime/evals/portraits.py)")
    return out


def load_weights(path: str, encoder: torch.nn.Module, renderer: torch.nn.Module) -> int:
    """Load a version-2 checkpoint's encoder and renderer weights; returns its step."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    encoder.load_state_dict(ckpt["encoder"])
    renderer.load_state_dict(ckpt["renderer"])
    return int(ckpt["step"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/renderer")
    ap.add_argument("--steps", type=int, default=3600)
    ap.add_argument("--minutes", type=float, default=110.0, help="stop after this long")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--small", action="store_true", help="tiny model (tests)")
    ap.add_argument("--resume", default=None, help="checkpoint to continue from")
    ap.add_argument("--init", default=None,
                    help="version-2 checkpoint whose weights start a new schedule (fine-tuning)")
    ap.add_argument("--warm-start", default=None,
                    help="version-1 checkpoint whose shared layers start the training")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dims = RendererDims(size=args.size)
    if args.small:
        dims = RendererDims(size=args.size, motion_grid=32, feature_channels=4,
                            unet_channels=(8, 8, 8), decoder_channels=4, idw_grid=16)
    encoder, renderer = build(dims)
    if args.init:
        step = load_weights(args.init, encoder, renderer)
        print(f"init: weights of {args.init} (step {step})", flush=True)
    if args.warm_start:
        copied = warm_start(renderer, encoder,
                            torch.load(args.warm_start, map_location="cpu", weights_only=True))
        print(f"warm start: {len(copied)} tensors from {args.warm_start}", flush=True)
    params = list(encoder.parameters()) + list(renderer.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    start = 0
    if args.resume:
        start = load_weights(args.resume, encoder, renderer)

    portraits = training_portraits()
    faces = prepare_faces(portraits)
    print(f"training portraits: {[n for n, _ in portraits]} ({len(faces)} with mirrors)",
          flush=True)
    data = TeacherPairs(faces, args.size, args.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / 100)
        return args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))

    def save(step: int) -> None:
        ckpt = {"dims": dims.to_json(), "encoder": encoder.state_dict(),
                "renderer": renderer.state_dict(), "step": step,
                "portraits": [n for n, _ in portraits], "seed": args.seed}
        tmp = out / "renderer.pt.tmp"
        torch.save(ckpt, tmp)
        tmp.replace(out / "renderer.pt")

    t0 = time.monotonic()
    step = start
    with open(out / "log.jsonl", "a") as log:
        for batch in loader:
            if step >= args.steps or (time.monotonic() - t0) > args.minutes * 60:
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            source = batch["source"].float() / 255.0
            result = renderer.forward_train(source, encoder(source), batch["skp"], batch["dkp"])
            terms = renderer_losses(result, batch, dims)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 20 == 0 or step == 1:
                rec = {k: round(float(v), 5) for k, v in terms.items()}
                rec.update(step=step, seconds=round(time.monotonic() - t0, 1), lr=lr_at(step))
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print(json.dumps(rec), flush=True)
            if step % args.save_every == 0:
                save(step)
    save(step)
    print(f"saved {out / 'renderer.pt'} at step {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
