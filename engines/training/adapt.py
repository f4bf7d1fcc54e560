"""Per-avatar adaptation of the neural renderer (``facecast adapt NAME``; issue 17, item 5).

The shared renderer is trained on many synthetic identities and renders a new photo zero-shot.
For one enrolled avatar, the procedural teacher (``engines.teacher``) can draw as many exact
targets as wanted on that very photo, so the fit is tightened there: the avatar's source features
[F, G, G] (what ``RendererEncoder`` computes once per avatar) are optimised by Adam against the
teacher on freshly drawn driving poses of this avatar's rig (``sample_coefficients`` +
``sample_pose``, a share with the eyes forced nearly shut as in training, and the neutral face
in every batch), with the training losses (``engines.training.losses.renderer_losses``). The
weights stay shared, so adapted and zero-shot avatars still render in one graph and one batch; the result is a 128 KiB array in the
bundle (``avatars.adaptation``).

Fitting only the features was chosen by measurement (grace_hopper, held out, R = 256, frame loss
on 24 validation pairs): features only 0.0261 → 0.0222 after 300 steps; every renderer weight
as well (lr 5e-4) 0.0228 on the same budget — no better, and it would cost a graph per avatar.

The fit is at R = 256; the features live on the G grid, which is the same at R = 512, so they
serve both sizes. Validation: a fixed, seeded set of teacher pairs (another stream of the same
seed) scored before and after; ``facecast adapt`` stores the result only when it lowers the
validation loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatars.adaptation import AdaptOptions
from avatars.bundle import Avatar
from avatars.expressions import sample_coefficients, sample_pose
from avatars.rig import N_COEFFICIENTS, NEUTRAL_POSE, Rig
from engines import teacher
from engines.training.losses import BLINK_BOOST_P, BLINK_INDICES, focus_map, renderer_losses
from engines.training.renderer_model import Renderer, load_checkpoint

ADAPT_SIZE = 256
"""Output side R the fit runs at (the features serve both sizes)."""


@dataclass(frozen=True)
class AdaptResult:
    """Outcome of ``adapt``.

    Attributes:
        features: float32 [F, G, G], the fitted source features.
        before, after: validation loss terms (``renderer_losses`` keys) with the encoder's
            features and with the fitted ones.
        steps: steps run; seconds: wall time of the fit (data included).
        options: the settings used.
    """

    features: np.ndarray
    before: dict[str, float]
    after: dict[str, float]
    steps: int
    seconds: float
    options: AdaptOptions = field(default_factory=AdaptOptions)

    def figures(self) -> dict[str, Any]:
        """JSON-ready steps, seconds and validation losses before and after."""
        return {"steps": self.steps, "seconds": round(self.seconds, 1),
                "validation_before": self.before, "validation_after": self.after}

    @property
    def improved(self) -> bool:
        """Whether the fit lowered the validation ``total``."""
        return self.after["total"] < self.before["total"]

    def meta(self, avatar: Avatar, model: str) -> dict[str, Any]:
        """Metadata for ``avatars.adaptation.write_adaptation``."""
        return {"model": model, "avatar_content_hash": avatar.metadata["content_hash"],
                "size": ADAPT_SIZE, "steps": self.steps, "seconds": round(self.seconds, 1),
                "options": asdict(self.options), "validation_before": self.before,
                "validation_after": self.after,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@dataclass(frozen=True)
class _Target:
    """One avatar's fixed inputs at R: crop, keypoints, rig and teacher triangulation."""

    crop: np.ndarray
    keypoints: np.ndarray
    rig: Rig
    triangles: np.ndarray

    @staticmethod
    def of(avatar: Avatar, size: int) -> _Target:
        kp = avatar.crop_landmarks(size)[:, :2].astype(np.float32)
        return _Target(avatar.crop_image(size), kp, Rig.for_avatar(avatar, size),
                       teacher.triangulate(kp, size))


def teacher_batch(target: _Target, rng: np.random.Generator, n: int,
                  neutral: bool = False) -> dict[str, torch.Tensor]:
    """``n`` teacher pairs on the avatar's own crop: driving keypoints ``dkp`` float32
    [n, 478, 2] (crop pixels), ``target`` [n, 3, R, R] in [0, 1], ``flow`` [n, 2, R, R],
    ``alpha`` and ``focus`` [n, 1, R, R] (what ``renderer_losses`` reads). With ``neutral``,
    row 0 is the neutral face (zero coefficients, ``NEUTRAL_POSE``), whose target is the photo
    itself: it keeps the fit from drifting where the avatar shows its own face."""
    size = target.crop.shape[0]
    dkp, images, flows, alphas, focus = [], [], [], [], []
    for i in range(n):
        if neutral and i == 0:
            coeffs, pose = np.zeros((1, N_COEFFICIENTS)), NEUTRAL_POSE[None]
        else:
            coeffs, pose = sample_coefficients(rng)[None], sample_pose(rng)[None]
            if rng.random() < BLINK_BOOST_P:
                coeffs[0, BLINK_INDICES] = rng.uniform(0.85, 1.0)
        kp3 = target.rig.keypoints3d(coeffs, pose)[0]
        kp = kp3[:, :2].astype(np.float32)
        frame = teacher.render(target.crop, target.keypoints, kp, target.triangles, kp3[:, 2])
        dkp.append(kp)
        images.append(frame.image)
        flows.append(frame.flow)
        alphas.append(frame.alpha)
        focus.append(focus_map(size, kp, frame.alpha))
    return {"dkp": torch.from_numpy(np.stack(dkp)),
            "target": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float(),
            "flow": torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float(),
            "alpha": torch.from_numpy(np.stack(alphas))[:, None].float(),
            "focus": torch.from_numpy(np.stack(focus))[:, None]}


def _terms(renderer: Renderer, source: torch.Tensor, keypoints: torch.Tensor,
           features: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``renderer_losses`` of one avatar (source [1, 3, R, R], keypoints [1, 478, 2], features
    [1, F, G, G]) driven by every row of ``batch``."""
    n = batch["dkp"].shape[0]
    out = renderer.forward_train(source.expand(n, -1, -1, -1), features.expand(n, -1, -1, -1),
                                 keypoints.expand(n, -1, -1), batch["dkp"])
    return renderer_losses(out, batch, renderer.dims)


def _score(renderer: Renderer, source: torch.Tensor, keypoints: torch.Tensor,
           features: torch.Tensor, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean validation loss terms over ``batches`` (weighted by rows)."""
    sums: dict[str, float] = {}
    rows = 0
    with torch.no_grad():
        for b in batches:
            n = b["dkp"].shape[0]
            for k, v in _terms(renderer, source, keypoints, features, b).items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            rows += n
    return {k: round(v / rows, 6) for k, v in sums.items()}


def adapt(avatar: Avatar, checkpoint: Path, options: AdaptOptions | None = None,
          progress: Callable[[dict[str, Any]], None] | None = None) -> AdaptResult:
    """Fit ``avatar``'s source features to the teacher (see the module docstring).

    Args:
        avatar: a loaded bundle.
        checkpoint: the renderer checkpoint the runtime's graphs were exported from
            (``engines.renderer.CHECKPOINT``).
        options: ``avatars.adaptation.AdaptOptions`` (None: the defaults).
        progress: called every 25 steps with a JSON-ready dict (step, seconds, lr, loss terms).

    Returns an ``AdaptResult`` (nothing is written; see ``avatars.adaptation``). Raises
    FileNotFoundError for a missing checkpoint, ValueError for a checkpoint of another version.
    """
    options = AdaptOptions() if options is None else options
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"renderer checkpoint not found: {checkpoint}")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    t0 = time.monotonic()
    encoder, renderer = load_checkpoint(str(checkpoint), size=ADAPT_SIZE)
    for p in list(encoder.parameters()) + list(renderer.parameters()):
        p.requires_grad_(False)
    target = _Target.of(avatar, ADAPT_SIZE)
    source = torch.from_numpy(target.crop.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    keypoints = torch.from_numpy(target.keypoints)[None]
    with torch.no_grad():
        initial = encoder(source)
    train_rng = np.random.default_rng([options.seed, 0])
    val_rng = np.random.default_rng([options.seed, 1])
    validation = [teacher_batch(target, val_rng, min(8, options.validation_pairs - i), i == 0)
                  for i in range(0, options.validation_pairs, 8)]
    before = _score(renderer, source, keypoints, initial, validation)

    features = torch.nn.Parameter(initial.clone())
    opt = torch.optim.Adam([features], lr=options.lr)
    step = 0
    while step < options.steps and time.monotonic() - t0 < options.minutes * 60:
        lr = options.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * step / options.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        b = teacher_batch(target, train_rng, options.batch, neutral=True)
        terms = _terms(renderer, source, keypoints, features, b)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        step += 1
        if progress is not None and (step % 25 == 0 or step == 1):
            progress({"step": step, "seconds": round(time.monotonic() - t0, 1),
                      "lr": round(float(lr), 6),
                      **{k: round(float(v.detach()), 5) for k, v in terms.items()}})
    fitted = features.detach()
    after = _score(renderer, source, keypoints, fitted, validation)
    return AdaptResult(fitted[0].numpy().astype(np.float32), before, after, step,
                       time.monotonic() - t0, options)


def adapt_and_store(avatar: Avatar, options: AdaptOptions | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None,
                    force: bool = False) -> tuple[AdaptResult, Path | None]:
    """``adapt`` with the runtime's checkpoint (``engines.renderer.CHECKPOINT``), then store the
    result in the avatar's bundle (``avatars.adaptation.write_adaptation``) when it lowered the
    validation loss, or always with ``force``. Returns the result and the file written (None
    when nothing was). Raises FileNotFoundError when the checkpoint is missing, OSError when the
    bundle folder cannot be written."""
    from avatars.adaptation import write_adaptation
    from engines.renderer import CHECKPOINT, checkpoint_digest

    model = checkpoint_digest()
    if model is None:
        raise FileNotFoundError(f"renderer checkpoint not found: {CHECKPOINT}")
    result = adapt(avatar, CHECKPOINT, options, progress)
    if not (result.improved or force):
        return result, None
    return result, write_adaptation(avatar.path, result.features, result.meta(avatar, model))
