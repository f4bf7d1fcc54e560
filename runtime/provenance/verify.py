"""``facecast verify FILE``: is this facecast's? The invisible watermark and the C2PA credentials.

Reads a video (anything PyAV/FFmpeg decodes) or an image, looks for the watermark
(``runtime.provenance.watermark``) and reads the C2PA manifest (``runtime.provenance.c2pa``), and
reports both side by side: a re-encoded copy keeps the mark and loses the credentials; an
untouched render has both.

For a video, up to ``max_frames`` frames spread over the file are decoded. The mark is looked
for in their average (the verdict: ``watermark_found``), then in every one of them alone at the
period found (``frames_marked`` of ``frames_checked``: the per-frame detection rate).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
MAX_FRAMES = 150
"""Frames decoded from a video by default."""


@dataclass(frozen=True)
class Report:
    """What ``verify`` found (``to_json`` gives the command's JSON)."""

    file: str
    kind: str
    frames_checked: int
    frames_marked: int
    watermark: object  # runtime.provenance.watermark.Detection
    credentials: object  # runtime.provenance.c2pa.Credentials

    def to_json(self) -> dict:
        """Flat JSON: ``watermark_found``, ``watermark_payload``, ``watermark_confidence``,
        ``c2pa_present`` and ``c2pa_valid`` at the top level, then the details."""
        w, c = self.watermark, self.credentials
        return {
            "file": self.file, "kind": self.kind,
            "watermark_found": w.found, "watermark_payload": w.payload,
            "watermark_confidence": w.confidence,
            "watermark_avatar_hash_prefix": w.avatar_hash_prefix,
            "watermark_sync_z": w.sync_z, "watermark_period_px": w.period_px,
            "frames_checked": self.frames_checked, "frames_marked": self.frames_marked,
            "c2pa_present": c.present, "c2pa_valid": c.valid, "c2pa_trusted": c.trusted,
            "c2pa_state": c.state, "c2pa_failures": list(c.failures),
            "c2pa_generator": c.generator, "c2pa_source_type": c.source_type,
            "c2pa_signer": c.signer, "c2pa_facecast": c.assertion,
        }

    def summary(self) -> str:
        """Two lines for people."""
        w, c = self.watermark, self.credentials
        mark = (f"watermark: found, payload {w.payload} (avatar hash {w.avatar_hash_prefix}…), "
                f"confidence {w.confidence:.6f}" if w.found else "watermark: none found")
        if self.kind == "video":
            mark += f"; {self.frames_marked}/{self.frames_checked} frames marked on their own"
        if not c.present:
            cred = "C2PA: no credentials"
        else:
            cred = (f"C2PA: {'valid' if c.valid else 'INVALID'} ({c.state}"
                    f"{', trusted' if c.trusted else ', signer not trusted here'}), "
                    f"generator {c.generator}, {c.source_type}")
            if c.failures:
                cred += f"; failures: {', '.join(c.failures)}"
        return f"{self.file}\n  {mark}\n  {cred}"


def read_frames(path: Path, max_frames: int = MAX_FRAMES) -> tuple[str, list[np.ndarray]]:
    """("image" | "video", uint8 [H, W, 3] RGB frames). Images are read with Pillow; videos
    with PyAV, up to ``max_frames`` frames evenly spread over the file. Raises ValueError for a
    file that is neither, or holds no picture."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as im:
                return "image", [np.asarray(im.convert("RGB"))]
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from None
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from None
    if not frames:
        raise ValueError(f"{path} holds no video frame")
    if len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in keep]
    return "video", frames


def verify(path: str | os.PathLike, max_frames: int = MAX_FRAMES) -> Report:
    """Look for the watermark and the C2PA credentials in the file at ``path``. Trusts
    facecast's local development root when this machine has one (``c2pa.dev_identity``'s
    folder), so files this machine signed read as trusted here. Raises ValueError for a file
    that cannot be decoded, FileNotFoundError for a missing one."""
    from runtime.provenance import watermark as wm
    from runtime.provenance.c2pa import dev_trust_anchor, read_credentials

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    kind, frames = read_frames(path, max_frames)
    residuals = [wm.residual(f) for f in frames]
    if len({r.shape for r in residuals}) != 1:
        raise ValueError(f"{path}: frames change size")
    detection = wm.detect_residual(np.mean(residuals, axis=0))
    marked = int(detection.found) if kind == "image" else sum(
        wm.detect_residual(r, periods=np.array([detection.period_px])).found for r in residuals)
    return Report(str(path), kind, len(frames), marked, detection,
                  read_credentials(path, trust_pem=dev_trust_anchor()))
