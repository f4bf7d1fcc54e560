"""The runtime face renderer: avatar + driving keypoints → face crops, on any backend, no torch.

``NeuralRenderer`` runs the exported graphs (``engines/models/renderer_encoder_R.onnx`` once per
avatar, ``renderer_R.onnx`` per batch of frames) through ``engines.backends`` (ONNX Runtime CPU or
CUDA, TensorRT), or through the torch modules when asked for ``backend="torch"`` (needs the
``train`` extra; for comparisons). Rows of one batch may belong to different avatars, so one call
serves every session that has a frame due.

An avatar fitted with ``facecast adapt`` carries its own source features in the bundle
(``avatars.adaptation``); ``prepare`` uses them instead of the encoder's when they were fitted to
this avatar and this renderer checkpoint, so adapted and zero-shot avatars still share one graph
and one batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatars.adaptation import applies, read_adaptation
from avatars.bundle import Avatar, BundleError
from engines.backends import Backend, open_backend

log = logging.getLogger(__name__)

PACKAGE_MODELS_DIR = Path(__file__).resolve().parent / "models"
"""The committed model files (``engines/models``)."""
MODELS_DIR = Path(os.environ.get("FACECAST_MODELS_DIR") or PACKAGE_MODELS_DIR).expanduser()
"""Where the renderer's ONNX files and checkpoint are read: ``$FACECAST_MODELS_DIR`` if set
(read at import), else ``engines/models``."""
SIZES = (256, 512)
"""Output crop sides R with exported graphs."""
CHECKPOINT = MODELS_DIR / "renderer.pt"
"""The torch checkpoint the ONNX files were exported from (``tools/export_onnx.py``); it lives
beside them, in ``MODELS_DIR``."""
BACKENDS = ("auto", "onnxruntime", "cuda", "tensorrt", "torch")


def model_paths(size: int, models_dir: Path | None = None) -> tuple[Path, Path]:
    """(encoder, renderer) ONNX paths for output side ``size``; ValueError for other sizes."""
    if size not in SIZES:
        raise ValueError(f"renderer size must be one of {SIZES}, got {size}")
    d = MODELS_DIR if models_dir is None else Path(models_dir)
    return d / f"renderer_encoder_{size}.onnx", d / f"renderer_{size}.onnx"


def checkpoint_digest(models_dir: Path | None = None) -> str | None:
    """``sha256:<hex>`` of the renderer checkpoint (``renderer.pt`` in ``models_dir``, default
    ``MODELS_DIR``) every exported graph comes from: the model identity an adaptation is tied
    to. None when the file is missing."""
    path = (MODELS_DIR if models_dir is None else Path(models_dir)) / CHECKPOINT.name
    if not path.is_file():
        return None
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class AvatarSource:
    """What the renderer needs of one avatar, computed once (``NeuralRenderer.prepare``).

    Attributes:
        source: float32 [3, R, R] in [0, 1], the render crop.
        features: float32 [F, G, G], encoder features of the crop.
        keypoints: float32 [478, 2], neutral keypoints in crop pixels.
        adapted: whether ``features`` are the bundle's adaptation (``facecast adapt``) rather
            than the encoder's.
    """

    source: np.ndarray
    features: np.ndarray
    keypoints: np.ndarray
    adapted: bool = False


class _TorchGraph:
    """Backend-shaped adapter around the torch encoder or renderer (``backend="torch"``): on the
    GPU when torch sees one ("torch-cuda"; inputs copied there and results back), else the CPU
    ("torch-cpu"). This is how GPU speed is measured where ONNX Runtime has no CUDA build."""

    def __init__(self, module, input_names: list[str], output_names: list[str],
                 device: str = "cpu"):
        self.module = module.to(device)
        self.device = device
        self.name = f"torch-{device}"
        self.input_names = input_names
        self.output_names = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device)
                    for n in self.input_names]
            return [self.module(*args).cpu().numpy()]


def _torch_graphs(size: int, checkpoint: Path) -> tuple[Backend, Backend]:
    import torch

    from engines.training.renderer_model import load_checkpoint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder, renderer = load_checkpoint(str(checkpoint), size=size)
    return (_TorchGraph(encoder, ["source"], ["source_features"], device),
            _TorchGraph(renderer, ["source", "source_features", "source_keypoints",
                                   "driving_keypoints"], ["frames"], device))


class NeuralRenderer:
    """Keypoint-driven face renderer at output side R.

    Args:
        size: R, 256 or 512.
        backend: "auto" (TensorRT plan if built, else ONNX Runtime CUDA, else CPU),
            "onnxruntime" (CPU), "cuda", "tensorrt" or "torch".
        threads: ONNX Runtime intra-op threads (default: its own choice).
        models_dir: folder of the ONNX files and ``renderer.pt`` (default ``MODELS_DIR``:
            ``$FACECAST_MODELS_DIR`` or ``engines/models``).

    Raises ValueError for an unknown size/backend, FileNotFoundError for missing graphs, and the
    backend's own error when e.g. TensorRT has no plan (its message says how to build one).
    """

    def __init__(self, size: int = 256, backend: str = "auto", threads: int | None = None,
                 models_dir: Path | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        enc_path, ren_path = model_paths(size, models_dir)
        self.size = size
        if backend == "torch":
            checkpoint = CHECKPOINT if models_dir is None else Path(models_dir) / CHECKPOINT.name
            if not checkpoint.is_file():
                raise FileNotFoundError(f"renderer checkpoint not found: {checkpoint}")
            self.encoder, self.renderer = _torch_graphs(size, checkpoint)
        else:
            kind = "onnxruntime" if backend == "onnxruntime" else backend
            # The encoder runs once per avatar: ONNX Runtime is always fine for it.
            self.encoder = open_backend(enc_path, "cuda" if kind == "cuda" else "onnxruntime",
                                        threads)
            self.renderer = open_backend(ren_path, kind, threads)  # type: ignore[arg-type]
        self.backend = self.renderer.name
        self.model = checkpoint_digest(models_dir)

    def prepare(self, avatar: Avatar, use_adaptation: bool = True) -> AvatarSource:
        """Crop, keypoints and source features of ``avatar`` at this renderer's R.

        The features are the bundle's adaptation when ``use_adaptation`` and it applies
        (``avatars.adaptation.applies``), else the encoder's. An adaptation that is damaged or
        does not apply is logged (a warning naming why) and left unused; it never fails the
        avatar.
        """
        crop = avatar.crop_image(self.size)
        source = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)
        features = self.encoder.run({"source": source[None]})[0][0]
        keypoints = avatar.crop_landmarks(self.size)[:, :2].astype(np.float32)
        adapted = False
        if use_adaptation:
            try:
                stored = read_adaptation(avatar.path)
            except BundleError as exc:
                log.warning("avatar %r: adaptation not used: %s", avatar.name, exc)
                stored = None
            if stored is not None:
                why = applies(stored, avatar, self.model, features.shape)
                if why is None:
                    features, adapted = stored.features, True
                else:
                    log.warning("avatar %r: adaptation not used: %s", avatar.name, why)
        return AvatarSource(np.ascontiguousarray(source), np.ascontiguousarray(features),
                            keypoints, adapted)

    def render(self, sources: Sequence[AvatarSource] | AvatarSource,
               driving: np.ndarray) -> np.ndarray:
        """Render a batch.

        Args:
            sources: one ``AvatarSource`` for every row, or a single one for all rows.
            driving: float32 [B, 478, 2] driving keypoints in crop pixels (``Rig.keypoints``).

        Returns:
            float32 [B, 3, R, R] frames in [0, 1].

        Raises ValueError for shape mismatches.
        """
        drv = np.asarray(driving, dtype=np.float32)
        if drv.ndim != 3 or drv.shape[1:] != (478, 2):
            raise ValueError(f"driving keypoints must be [B, 478, 2], got {list(drv.shape)}")
        b = drv.shape[0]
        rows = [sources] * b if isinstance(sources, AvatarSource) else list(sources)
        if len(rows) != b:
            raise ValueError(f"{len(rows)} avatar sources for {b} driving rows")
        feeds = {
            "source": np.stack([r.source for r in rows]),
            "source_features": np.stack([r.features for r in rows]),
            "source_keypoints": np.stack([r.keypoints for r in rows]),
            "driving_keypoints": np.ascontiguousarray(drv),
        }
        return self.renderer.run(feeds)[0]


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float [B, 3, R, R] in [0, 1] → uint8 [B, R, R, 3] RGB (rounded, clipped)."""
    x = np.clip(np.asarray(frames, dtype=np.float32) * 255.0 + 0.5, 0, 255)
    return x.astype(np.uint8).transpose(0, 2, 3, 1)
