"""A per-avatar renderer adaptation stored in the bundle (``facecast adapt``; issue 17, item 5).

The renderer's weights are shared by every avatar (one graph, rows of one batch from different
sessions); what is fitted per avatar is the one per-avatar input the graph takes that is not the
photo itself: the source features [F, G, G] the encoder otherwise computes from the crop
(``engines.training.adapt``). They are stored beside the bundle's data files::

    NAME/adapted.npz
      features  float32 [F, G, G], finite
      meta      0-d unicode array: JSON object with at least ``META_KEYS``

The bundle's content hash does not cover this file (it is derived data that can be rebuilt or
deleted at any time); instead its ``meta`` names what it was fitted to: the avatar's
``content_hash`` and the renderer checkpoint's digest (``model``). ``applies`` says whether a
stored adaptation fits the avatar and renderer at hand; the runtime uses it only then and falls
back to the encoder's features otherwise (a re-enrolled avatar, an updated renderer).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatars.bundle import Avatar, BundleError

ADAPTATION_FILE = "adapted.npz"
FORMAT = "facecast-adaptation"
FORMAT_VERSION = 1
META_KEYS = ("format", "version", "model", "avatar_content_hash")
"""Keys every adaptation's ``meta`` must have (``write_adaptation`` adds format and version)."""


@dataclass(frozen=True)
class AdaptOptions:
    """Settings of one fit (``engines.training.adapt.adapt``; kept here, torch-free, so that the
    command line reads its defaults without importing torch, and recorded in the meta).

    Attributes:
        steps: Adam steps (each on ``batch`` fresh teacher pairs; about 0.2 s a step at batch 8
            on two CPU cores).
        batch: pairs per step.
        lr: peak learning rate (cosine decay to 5% of it; the features are O(0.1)).
        seed: seeds the driving poses (training and validation streams) and nothing else.
        minutes: stop early after this long (at a step boundary).
        validation_pairs: size of the fixed validation set.
        threads: torch intra-op threads (None: torch's default).
    """

    steps: int = 300
    batch: int = 8
    lr: float = 1e-2
    seed: int = 0
    minutes: float = 10.0
    validation_pairs: int = 24
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.validation_pairs < 1:
            raise ValueError("steps, batch and validation_pairs must be at least 1")
        if not (self.lr > 0 and self.minutes > 0):
            raise ValueError("lr and minutes must be positive")


@dataclass(frozen=True)
class Adaptation:
    """A stored adaptation.

    Attributes:
        features: float32 [F, G, G] source features for the renderer.
        meta: the JSON metadata (``META_KEYS`` and whatever the fit recorded: steps, seed,
            seconds, validation losses).
    """

    features: np.ndarray
    meta: dict[str, Any]


def adaptation_path(folder: str | os.PathLike[str]) -> Path:
    """``folder/adapted.npz``."""
    return Path(folder) / ADAPTATION_FILE


def write_adaptation(folder: str | os.PathLike[str], features: np.ndarray,
                     meta: dict[str, Any]) -> Path:
    """Store an adaptation in the bundle ``folder`` atomically (a temporary file, then rename).

    Args:
        folder: the bundle folder (must exist).
        features: float [F, G, G], finite; stored as float32.
        meta: JSON-serialisable dict with ``model`` and ``avatar_content_hash``; ``format`` and
            ``version`` are set here.

    Returns the file's path. Raises ValueError for bad features or meta, OSError when the folder
    cannot be written.
    """
    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 3 or not np.isfinite(feats).all():
        raise ValueError(f"adapted features must be finite [F, G, G], got {list(feats.shape)}")
    meta = {**meta, "format": FORMAT, "version": FORMAT_VERSION}
    missing = [k for k in META_KEYS if not isinstance(meta.get(k), str | int)]
    if missing:
        raise ValueError(f"adaptation meta lacks {missing}")
    buf = io.BytesIO()
    np.savez(buf, features=feats, meta=np.array(json.dumps(meta, sort_keys=True)))
    path = adaptation_path(folder)
    tmp = path.with_name(f".{ADAPTATION_FILE}.tmp-{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def read_adaptation(folder: str | os.PathLike[str]) -> Adaptation | None:
    """The adaptation stored in bundle ``folder``, or None when there is none.

    Raises BundleError naming the problem when the file is damaged: not an ``.npz`` (or one that
    needs pickle), ``features`` or ``meta`` missing, features not finite float32 [F, G, G],
    meta not a JSON object with ``META_KEYS``, or another format/version.
    """
    path = adaptation_path(folder)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.array(data[k]) for k in ("features", "meta") if k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: not a readable adaptation ({exc}); run facecast adapt "
                          "again or delete it") from None
    if len(arrays) != 2:
        raise BundleError(f"{path}: expected arrays 'features' and 'meta'")
    feats, meta_text = arrays["features"], str(arrays["meta"][()])
    if feats.dtype != np.float32 or feats.ndim != 3 or not np.isfinite(feats).all():
        raise BundleError(f"{path}: features must be finite float32 [F, G, G], "
                          f"got {feats.dtype} {list(feats.shape)}")
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: meta is not JSON ({exc})") from None
    if not isinstance(meta, dict) or any(k not in meta for k in META_KEYS):
        raise BundleError(f"{path}: meta must be a JSON object with {list(META_KEYS)}")
    if meta["format"] != FORMAT or meta["version"] != FORMAT_VERSION:
        raise BundleError(f"{path}: unsupported adaptation {meta['format']!r} version "
                          f"{meta['version']} (expected {FORMAT!r} version {FORMAT_VERSION})")
    return Adaptation(feats, meta)


def remove_adaptation(folder: str | os.PathLike[str]) -> bool:
    """Delete the bundle's adaptation; returns whether there was one."""
    path = adaptation_path(folder)
    if path.is_file():
        path.unlink()
        return True
    return False


def applies(adaptation: Adaptation, avatar: Avatar, model: str | None,
            feature_shape: tuple[int, int, int]) -> str | None:
    """Why ``adaptation`` does not fit ``avatar`` and the renderer, or None when it does.

    Args:
        adaptation: a stored adaptation (``read_adaptation``).
        avatar: the loaded bundle it was read from.
        model: digest of the renderer checkpoint in use (``engines.renderer.checkpoint_digest``),
            None when it cannot be computed (then nothing applies).
        feature_shape: (F, G, G) of the renderer in use.
    """
    if adaptation.meta["avatar_content_hash"] != avatar.metadata.get("content_hash"):
        return "fitted to an earlier enrollment of this avatar (run facecast adapt again)"
    if model is None:
        return "the renderer checkpoint is not beside the graphs, so the model cannot be checked"
    if adaptation.meta["model"] != model:
        return "fitted to another renderer model (run facecast adapt again)"
    if tuple(adaptation.features.shape) != tuple(feature_shape):
        return (f"features {list(adaptation.features.shape)} do not fit the renderer's "
                f"{list(feature_shape)}")
    return None
