"""The avatar bundle: on-disk format, validation and loading.

A bundle is a folder::

    NAME/
      avatar.json     metadata (see ``REQUIRED_METADATA``), incl. the crop box and content hash
      image.png       the full source image, RGB, 8 bit
      landmarks.npy   neutral Face Mesh landmarks, float32 [478, 3], pixels of image.png
                      (x right, y down; z in the same pixel scale as x, negative toward the camera)
      mask.png        soft paste-back mask, 8 bit grey, [side, side] over the crop box: 255 on face,
                      hair and neck, falling to exactly 0 at the crop border

The content hash is SHA-256 over the three data files and the metadata (without the hash
itself, keys sorted), so any change after enrollment is caught at load time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from avatars.topology import LEFT_EYE_CORNERS, N_LANDMARKS, RIGHT_EYE_CORNERS

FORMAT = "facecast-avatar"
FORMAT_VERSION = 1
METADATA_FILE = "avatar.json"
IMAGE_FILE = "image.png"
LANDMARKS_FILE = "landmarks.npy"
MASK_FILE = "mask.png"
DATA_FILES = (IMAGE_FILE, LANDMARKS_FILE, MASK_FILE)

REQUIRED_METADATA: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "name": str,
    "source": str,
    "licence": str,
    "attribution": str,
    "consent": str,
    "image_size": list,
    "crop_box": list,
    "iod_px": (int, float),
    "landmarker": str,
    "content_hash": str,
}

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Avatar names: 1–64 characters of letters, digits, ``_`` and ``-``, not starting with ``_``
or ``-``; so a name can never be a path, ``..``, hidden, or escape the avatar folder."""

PACKAGE_AVATAR_DIR = Path(__file__).resolve().parent
"""Bundles shipped with the package (``avatars/default``)."""

MASK_BORDER_MAX = 0
"""Largest mask value (0–255) allowed on the outermost row/column of the crop."""


class BundleError(ValueError):
    """A bundle is missing, incomplete, damaged or inconsistent; the message names the problem."""


class ConsentMissing(BundleError):
    """The bundle states no consent (empty, or "not stated"): facecast does not make it speak
    unless the operator explicitly allows it (``--allow-unconsented-avatar``)."""


UNSTATED_CONSENT = frozenset({"", "not stated", "unknown", "none"})
"""Consent statements that state nothing (compared stripped and lower-cased)."""


def consent_stated(statement: object) -> bool:
    """Whether ``statement`` (a bundle's ``consent``) says who agreed to what: a non-empty
    string that is not one of ``UNSTATED_CONSENT``."""
    return isinstance(statement, str) and statement.strip().lower() not in UNSTATED_CONSENT


def require_consent(avatar: Avatar, allow_unconsented: bool = False) -> bool:
    """Check that ``avatar`` states the consent of the person it shows (EU AI Act art. 50
    deployers disclose deepfakes; a face is not made to speak without its owner's agreement).

    Returns True when consent is stated, False when it is not but ``allow_unconsented`` (the
    caller logs that). Raises ConsentMissing otherwise, with a one-line message saying how to
    fix it."""
    if consent_stated(avatar.metadata.get("consent")):
        return True
    if allow_unconsented:
        return False
    raise ConsentMissing(
        f"avatar {avatar.name!r} states no consent of the person it shows: enroll it again "
        "with --consent 'who agreed, to what, when', or pass --allow-unconsented-avatar")


@dataclass(frozen=True)
class Avatar:
    """A validated avatar bundle in memory.

    Attributes:
        name: the avatar's name (``NAME_PATTERN``).
        path: the bundle folder.
        metadata: the parsed ``avatar.json``.
        image: uint8 [H, W, 3] RGB full source image.
        landmarks: float32 [478, 3] neutral landmarks in pixels of ``image`` (z in x's scale).
        crop_box: (x0, y0, side) integer pixels of ``image``: the square render crop, inside it.
        mask: float32 [side, side] in [0, 1], the paste-back mask over the crop box.
    """

    name: str
    path: Path
    metadata: dict[str, Any]
    image: np.ndarray
    landmarks: np.ndarray
    crop_box: tuple[int, int, int]
    mask: np.ndarray

    @property
    def iod_px(self) -> float:
        """Inter-ocular distance in image pixels: 3-D distance between the two eye centres,
        each the midpoint of its eye corners (Face Mesh 33/133 and 263/362)."""
        return inter_ocular_distance(self.landmarks)

    def crop_landmarks(self, size: int) -> np.ndarray:
        """Neutral landmarks in pixels of the render crop resampled to ``size`` × ``size``.

        Returns float32 [478, 3]; x, y in crop pixels, z scaled by the same factor.
        """
        x0, y0, side = self.crop_box
        out = self.landmarks.astype(np.float64).copy()
        out[:, 0] -= x0
        out[:, 1] -= y0
        out *= size / side
        return out.astype(np.float32)

    def crop_image(self, size: int) -> np.ndarray:
        """The render crop of the source image, uint8 [size, size, 3] RGB (Lanczos resampling)."""
        x0, y0, side = self.crop_box
        crop = Image.fromarray(self.image[y0:y0 + side, x0:x0 + side])
        if side != size:
            crop = crop.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(crop)

    def crop_mask(self, size: int) -> np.ndarray:
        """The paste-back mask resampled to ``size`` × ``size``, float32 [size, size] in [0, 1]."""
        if self.mask.shape[0] == size:
            return self.mask
        img = Image.fromarray(self.mask.astype(np.float32), mode="F")
        return np.clip(np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)), 0, 1)


def inter_ocular_distance(landmarks: np.ndarray) -> float:
    """3-D distance between the eye centres of Face Mesh landmarks [478, 3] (or [478, 2]).

    Each eye centre is the midpoint of its two corners (33/133 right, 263/362 left), which,
    unlike the iris centres, does not move with gaze.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    right = lm[list(RIGHT_EYE_CORNERS)].mean(axis=0)
    left = lm[list(LEFT_EYE_CORNERS)].mean(axis=0)
    return float(np.linalg.norm(left - right))


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid avatar name, else raise ``BundleError`` saying why."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BundleError(
            f"invalid avatar name {name!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit (no paths)"
        )
    return name


def user_avatar_dir() -> Path:
    """Where ``facecast enroll`` writes by default and names are looked up first:
    ``$FACECAST_AVATAR_DIR``, else ``$XDG_DATA_HOME/facecast/avatars``
    (``~/.local/share/facecast/avatars``)."""
    env = os.environ.get("FACECAST_AVATAR_DIR")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "facecast" / "avatars"


def search_dirs() -> list[Path]:
    """Folders searched for an avatar name, in order: the user folder, then the package's."""
    return [user_avatar_dir(), PACKAGE_AVATAR_DIR]


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """Find a bundle folder from a name (searched in ``search_dirs()``) or a folder path.

    Raises:
        BundleError: no such avatar (the message lists where it looked).
    """
    text = os.fspath(name_or_path)
    if os.sep in text or (os.altsep and os.altsep in text) or text.startswith("."):
        path = Path(text)
        if not path.is_dir():
            raise BundleError(f"avatar bundle folder not found: {path}")
        return path
    check_name(text)
    for folder in search_dirs():
        if (folder / text / METADATA_FILE).is_file():
            return folder / text
    where = ", ".join(str(d) for d in search_dirs())
    raise BundleError(f"unknown avatar {text!r} (looked in {where})")


def content_hash(metadata: dict[str, Any], files: dict[str, bytes]) -> str:
    """``sha256:<hex>`` over the data files (in ``DATA_FILES`` order) and the metadata
    without its ``content_hash`` key, serialised as sorted compact JSON."""
    h = hashlib.sha256()
    for fname in DATA_FILES:
        data = files[fname]
        h.update(fname.encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    meta = {k: v for k, v in metadata.items() if k != "content_hash"}
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    return "sha256:" + h.hexdigest()


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] RGB or [H, W] grey array (deterministic encoder settings)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of ``array``."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_bundle(
    folder: Path,
    metadata: dict[str, Any],
    image: np.ndarray,
    landmarks: np.ndarray,
    mask: np.ndarray,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a bundle atomically: into a hidden temporary folder beside ``folder``, then rename.

    Args:
        folder: the bundle folder to create (its name must be ``metadata["name"]``).
        metadata: metadata without ``content_hash`` (it is computed here).
        image: uint8 [H, W, 3] RGB.
        landmarks: float32 [478, 3] in pixels of ``image``.
        mask: uint8 [side, side].
        overwrite: replace an existing bundle of that name.

    Returns the bundle folder. Raises ``BundleError`` if it exists and ``overwrite`` is False,
    and ``OSError`` if the parent folder cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise BundleError(f"avatar bundle already exists: {folder} (use --force to replace it)")
    files = {
        IMAGE_FILE: encode_png(np.ascontiguousarray(image, dtype=np.uint8)),
        LANDMARKS_FILE: encode_npy(np.ascontiguousarray(landmarks, dtype=np.float32)),
        MASK_FILE: encode_png(np.ascontiguousarray(mask, dtype=np.uint8)),
    }
    meta = dict(metadata)
    meta["content_hash"] = content_hash(meta, files)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        _remove_tree(tmp)
    tmp.mkdir()
    try:
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (tmp / METADATA_FILE).write_text(text, encoding="utf-8")
        if folder.exists():
            _remove_tree(folder)
        tmp.rename(folder)
    except BaseException:
        _remove_tree(tmp)
        raise
    return folder


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            _remove_tree(child)
        else:
            child.unlink()
    path.rmdir()


def load(name_or_path: str | os.PathLike[str]) -> Avatar:
    """Load and validate an avatar bundle by name (see ``search_dirs()``) or folder path.

    Returns an ``Avatar``. Raises ``BundleError`` naming the problem: missing folder or file,
    unreadable JSON or image, missing/mistyped metadata field, wrong array shape or dtype,
    non-finite landmarks, landmarks or crop box outside the image, mask of the wrong size or not
    zero at the crop border, or a content hash that does not match the files.
    """
    folder = resolve(name_or_path)
    for fname in (METADATA_FILE, *DATA_FILES):
        if not (folder / fname).is_file():
            raise BundleError(f"avatar bundle {folder} is incomplete: {fname} is missing")
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{folder / METADATA_FILE}: not valid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise BundleError(f"{folder / METADATA_FILE}: expected a JSON object")
    for key, kind in REQUIRED_METADATA.items():
        if key not in metadata:
            raise BundleError(f"{folder / METADATA_FILE}: missing field {key!r}")
        if not isinstance(metadata[key], kind) or isinstance(metadata[key], bool):
            raise BundleError(f"{folder / METADATA_FILE}: field {key!r} has the wrong type")
    if metadata["format"] != FORMAT or metadata["version"] != FORMAT_VERSION:
        raise BundleError(
            f"{folder}: unsupported bundle format {metadata['format']!r} "
            f"version {metadata['version']} (expected {FORMAT!r} version {FORMAT_VERSION})"
        )
    name = check_name(metadata["name"])

    files = {fname: (folder / fname).read_bytes() for fname in DATA_FILES}
    expected = content_hash(metadata, files)
    if metadata["content_hash"] != expected:
        raise BundleError(
            f"avatar bundle {folder} is damaged: content hash does not match its files "
            "(a file was changed after enrollment; enroll again)"
        )

    image = _decode_png(folder / IMAGE_FILE, files[IMAGE_FILE], "RGB")
    mask_u8 = _decode_png(folder / MASK_FILE, files[MASK_FILE], "L")
    try:
        landmarks = np.load(io.BytesIO(files[LANDMARKS_FILE]), allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{folder / LANDMARKS_FILE}: not a valid .npy array ({exc})") from None

    h, w = image.shape[:2]
    if list(metadata["image_size"]) != [w, h]:
        raise BundleError(
            f"{folder}: image.png is {w}x{h} but metadata says {metadata['image_size']}"
        )
    if landmarks.shape != (N_LANDMARKS, 3) or landmarks.dtype != np.float32:
        raise BundleError(
            f"{folder / LANDMARKS_FILE}: expected float32 [{N_LANDMARKS}, 3], "
            f"got {landmarks.dtype} {list(landmarks.shape)}"
        )
    if not np.isfinite(landmarks).all():
        raise BundleError(f"{folder / LANDMARKS_FILE}: contains NaN or infinite values")
    if (landmarks[:, 0].min() < 0 or landmarks[:, 0].max() > w
            or landmarks[:, 1].min() < 0 or landmarks[:, 1].max() > h):
        raise BundleError(f"{folder / LANDMARKS_FILE}: landmarks lie outside the image")
    box = metadata["crop_box"]
    if len(box) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
        raise BundleError(f"{folder}: crop_box must be three integers [x0, y0, side]")
    x0, y0, side = box
    if side <= 0 or x0 < 0 or y0 < 0 or x0 + side > w or y0 + side > h:
        raise BundleError(f"{folder}: crop_box {box} does not lie inside the {w}x{h} image")
    if mask_u8.shape != (side, side):
        got = f"{mask_u8.shape[1]}x{mask_u8.shape[0]}"
        raise BundleError(f"{folder / MASK_FILE}: expected {side}x{side}, got {got}")
    border = np.concatenate([mask_u8[0], mask_u8[-1], mask_u8[:, 0], mask_u8[:, -1]])
    if border.max() > MASK_BORDER_MAX:
        raise BundleError(f"{folder / MASK_FILE}: mask must fall to 0 at the crop border")
    return Avatar(
        name=name,
        path=folder,
        metadata=metadata,
        image=image,
        landmarks=landmarks,
        crop_box=(x0, y0, side),
        mask=mask_u8.astype(np.float32) / 255.0,
    )


def _decode_png(path: Path, data: bytes, mode: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG" or img.mode != mode:
                raise BundleError(f"{path}: expected a {mode} PNG, got {img.format} {img.mode}")
            return np.asarray(img.convert(mode)).copy()
    except (OSError, Image.DecompressionBombError) as exc:
        raise BundleError(f"{path}: cannot decode image ({exc})") from None
