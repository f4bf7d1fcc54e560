"""Enrollment: a portrait photo → an avatar bundle, using mediapipe Face Mesh (refined, 478 points).

This is the only module of ``avatars`` that imports mediapipe, and only inside
``detect_faces``; loading a bundle and running the rig never need it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from avatars.bundle import (
    FORMAT,
    FORMAT_VERSION,
    BundleError,
    check_name,
    consent_stated,
    inter_ocular_distance,
    user_avatar_dir,
    write_bundle,
)
from avatars.topology import CHIN, FACE_OVAL

MAX_PIXELS = 40_000_000
"""Largest accepted image, in pixels (40 megapixels); checked from the header before decoding."""
MIN_IOD_PX = 32.0
"""Smallest accepted inter-ocular distance, in pixels. The render crop spans about 5 IOD, so a
smaller face would be upsampled more than 1.6× into a 256-pixel crop and look soft."""
CROP_SCALE = 1.9
"""Render crop side = CROP_SCALE × the larger side of the face oval's bounding box: about one
face-width of margin on each side for head motion (yaw/pitch ±20°, small translations). The
figure is in the range FOMM/LivePortrait-style croppers use (LivePortrait's default is 2.3 on a
tighter detector box)."""
MASK_FEATHER = 0.05
"""Gaussian feather of the paste-back mask edge, as a fraction of the crop side (σ)."""
MASK_BORDER_RAMP = 0.08
"""Width of the ramp that takes the mask to exactly 0 at the crop border, fraction of the side."""
LANDMARKER = "mediapipe 0.10.21 face_mesh static_image_mode refine_landmarks"


class EnrollError(ValueError):
    """Enrollment refused the input; the message is one line saying why."""


@dataclass(frozen=True)
class EnrollOptions:
    """What enrollment records and how it chooses a face.

    Attributes:
        consent: the consent statement recorded in the bundle (who agreed, to what, when);
            required: ``enroll`` refuses an empty or "not stated" one.
        source: where the image came from (defaults to the file name).
        licence: the image's licence.
        attribution: credit line for the image.
        largest: with several faces, take the largest instead of refusing.
        overwrite: replace an existing bundle of the same name.
    """

    consent: str = ""
    source: str | None = None
    licence: str = "unknown"
    attribution: str = ""
    largest: bool = False
    overwrite: bool = False


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB, honouring EXIF orientation.

    Raises:
        EnrollError: missing or unreadable file, not an image, or over ``MAX_PIXELS``
            (checked from the header, before the pixels are decoded).
    """
    p = Path(path)
    if not p.is_file():
        raise EnrollError(f"image not found: {p}")
    try:
        with Image.open(p) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise EnrollError(
                    f"image too large: {w}x{h} is {w * h / 1e6:.1f} megapixels "
                    f"(limit {MAX_PIXELS / 1e6:.0f}); downscale it first"
                )
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB")).copy()
    except UnidentifiedImageError:
        raise EnrollError(f"not an image file (or a format Pillow cannot read): {p}") from None
    except Image.DecompressionBombError as exc:
        raise EnrollError(f"image too large: {exc}") from None
    except OSError as exc:
        raise EnrollError(f"cannot read image {p}: {exc}") from None


PROTOBUF_BACKEND_VAR = "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
"""mediapipe 0.10.21 declares protobuf < 5, while livekit and pipecat need protobuf >= 5. With
protobuf 5.29 its Face Mesh graph fails to parse under protobuf's default (upb) backend and works
under the pure-Python one, with the same 478 landmarks and no measurable cost (measured 2026-12,
``../shared/RECIPES.md``, "Agent frameworks beside mediapipe"). The backend is chosen once, when
protobuf is first imported: ``facecast`` sets this variable at its entry (``runtime.cli.main``),
the test suite in ``tests/conftest.py``, and ``import_mediapipe`` whenever protobuf is not yet
loaded."""


def use_python_protobuf() -> None:
    """Select protobuf's pure-Python backend for this process, if protobuf is not imported yet
    (``PROTOBUF_BACKEND_VAR``); an explicit setting in the environment is kept."""
    os.environ.setdefault(PROTOBUF_BACKEND_VAR, "python")


def import_mediapipe():
    """Import and return ``mediapipe`` with protobuf's pure-Python backend (see
    ``PROTOBUF_BACKEND_VAR``).

    Raises RuntimeError when protobuf was already imported with another backend in this process
    (the Face Mesh graph would fail to parse later with a less clear message): set
    ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` before the process starts, or measure in
    a separate process. ImportError when mediapipe is not installed."""
    if "google.protobuf" not in sys.modules:
        use_python_protobuf()
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() != "python":
        raise RuntimeError(
            f"mediapipe's Face Mesh needs protobuf's pure-Python backend, but protobuf was "
            f"imported with the {api_implementation.Type()!r} one; set "
            f"{PROTOBUF_BACKEND_VAR}=python before starting Python")
    import mediapipe

    return mediapipe


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration: mediapipe's C++ side (glog, absl,
    TFLite) prints start-up chatter there that no Python setting reaches. Python exceptions are
    unaffected; ``sys.stderr`` is flushed first so nothing of ours is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def detect_faces(image: np.ndarray, max_faces: int = 4) -> list[np.ndarray]:
    """Run mediapipe Face Mesh (static image mode, refined) on an RGB image.

    Args:
        image: uint8 [H, W, 3] RGB.
        max_faces: the most faces looked for.

    Returns one float32 [478, 3] array per face, in pixels of ``image`` (z scaled by the image
    width, as mediapipe's normalised z is), largest face first.
    """
    mp = import_mediapipe()  # enrollment-only dependency

    h, w = image.shape[:2]
    with native_stderr_silenced(), mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True,
        refine_landmarks=True,
        max_num_faces=max_faces,
        min_detection_confidence=0.5,
    ) as mesh:
        result = mesh.process(np.ascontiguousarray(image))
    faces = []
    for face in result.multi_face_landmarks or []:
        lm = np.array([[p.x * w, p.y * h, p.z * w] for p in face.landmark], dtype=np.float32)
        faces.append(lm)
    faces.sort(key=inter_ocular_distance, reverse=True)
    return faces


def crop_box_for(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int]:
    """The square render crop (x0, y0, side) in integer pixels for a face.

    Centred on the face oval's bounding box, side ``CROP_SCALE`` × its larger side, shifted (and
    if need be shrunk) to lie inside the image.

    Args:
        landmarks: [478, 3] pixels.
        image_size: (width, height) of the image.
    """
    w, h = image_size
    oval = landmarks[list(FACE_OVAL), :2].astype(np.float64)
    lo, hi = oval.min(axis=0), oval.max(axis=0)
    centre = (lo + hi) / 2
    side = int(round(CROP_SCALE * float((hi - lo).max())))
    side = max(16, min(side, w, h))
    x0 = int(round(centre[0] - side / 2))
    y0 = int(round(centre[1] - side / 2))
    x0 = min(max(x0, 0), w - side)
    y0 = min(max(y0, 0), h - side)
    return x0, y0, side


def paste_mask(landmarks: np.ndarray, crop_box: tuple[int, int, int]) -> np.ndarray:
    """Soft paste-back mask over the crop: uint8 [side, side], 255 inside, exactly 0 at the border.

    The covered region is the union of (a) an ellipse around the face oval widened by 30% and
    raised to take in the hair (top at 1.45 face-half-heights above the face centre) and (b) the
    neck: a band as wide as 70% of the face below the chin down to the crop's bottom edge. The
    union is feathered with a Gaussian (σ = ``MASK_FEATHER`` × side) and multiplied by a
    smoothstep ramp of width ``MASK_BORDER_RAMP`` × side that reaches 0 at the border.
    """
    import cv2  # opencv-python-headless: drawing and blurring

    x0, y0, side = crop_box
    pts = landmarks[:, :2].astype(np.float64) - (x0, y0)
    oval = pts[list(FACE_OVAL)]
    lo, hi = oval.min(axis=0), oval.max(axis=0)
    cx, cy = (lo + hi) / 2
    half_w, half_h = (hi - lo) / 2
    region = np.zeros((side, side), np.uint8)
    top = cy - 1.45 * half_h
    bottom = pts[CHIN, 1] + 0.05 * half_h
    ell_cy, ell_ry = (top + bottom) / 2, (bottom - top) / 2
    cv2.ellipse(
        region,
        (int(round(cx)), int(round(ell_cy))),
        (int(round(1.3 * half_w)), int(round(ell_ry))),
        0, 0, 360, 255, thickness=-1,
    )
    neck_half = 0.7 * half_w
    cv2.rectangle(
        region,
        (int(round(cx - neck_half)), int(round(pts[CHIN, 1] - 0.3 * half_h))),
        (int(round(cx + neck_half)), side - 1),
        255, thickness=-1,
    )
    soft = cv2.GaussianBlur(region.astype(np.float32) / 255.0, (0, 0), MASK_FEATHER * side)
    ramp_px = max(1.0, MASK_BORDER_RAMP * side)
    idx = np.arange(side, dtype=np.float64)
    dist = np.minimum(idx, side - 1 - idx) / ramp_px
    t = np.clip(dist, 0.0, 1.0)
    ramp = t * t * (3 - 2 * t)
    mask = soft * np.outer(ramp, ramp)
    return np.clip(np.round(mask * 255.0), 0, 255).astype(np.uint8)


def choose_face(faces: list[np.ndarray], largest: bool) -> np.ndarray:
    """Pick the face to enroll. Raises ``EnrollError`` for none, or several without ``largest``."""
    if not faces:
        raise EnrollError("no face found in the image (a frontal, well-lit portrait works best)")
    if len(faces) > 1 and not largest:
        raise EnrollError(
            f"{len(faces)} faces found; crop the image to one face or pass --largest"
        )
    face = faces[0]
    iod = inter_ocular_distance(face)
    if iod < MIN_IOD_PX:
        raise EnrollError(
            f"face too small to render well: eyes {iod:.0f} px apart, need at least "
            f"{MIN_IOD_PX:.0f} px (use a larger or tighter photo)"
        )
    return face


def enroll(
    image_path: str | os.PathLike[str],
    name: str,
    out_dir: str | os.PathLike[str] | None = None,
    options: EnrollOptions = EnrollOptions(),
) -> Path:
    """Enroll a portrait as avatar ``name`` and write its bundle to ``out_dir / name``.

    Every check runs before anything is written; on error nothing is left behind.

    Args:
        image_path: any image Pillow reads (PNG, JPEG, WebP, …), at most ``MAX_PIXELS``.
        name: avatar name (``avatars.bundle.NAME_PATTERN``).
        out_dir: parent folder; default ``avatars.bundle.user_avatar_dir()``.
        options: consent, provenance and face choice.

    Returns the bundle folder.

    Raises:
        EnrollError: no consent statement, bad image, no face, several faces, face too small,
            bad name, or the bundle exists already (without ``options.overwrite``).
    """
    try:
        check_name(name)
    except BundleError as exc:
        raise EnrollError(str(exc)) from None
    if not consent_stated(options.consent):
        raise EnrollError("a consent statement is required: --consent 'who agreed, to what, "
                          "when' (facecast makes a real person's face say things)")
    folder = Path(out_dir) if out_dir is not None else user_avatar_dir()
    folder = folder / name
    if folder.exists() and not options.overwrite:
        raise EnrollError(f"avatar bundle already exists: {folder} (pass --force to replace it)")
    image = read_image(image_path)
    face = choose_face(detect_faces(image), options.largest)
    h, w = image.shape[:2]
    box = crop_box_for(face, (w, h))
    mask = paste_mask(face, box)
    metadata = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": name,
        "source": options.source or Path(image_path).name,
        "licence": options.licence,
        "attribution": options.attribution,
        "consent": options.consent,
        "image_size": [w, h],
        "crop_box": list(box),
        "iod_px": round(inter_ocular_distance(face), 3),
        "landmarker": LANDMARKER,
    }
    try:
        return write_bundle(folder, metadata, image, face, mask, overwrite=options.overwrite)
    except OSError as exc:
        raise EnrollError(f"cannot write avatar bundle to {folder}: {exc}") from None
