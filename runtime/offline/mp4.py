"""The one MP4 writer: H.264 + AAC (PyAV), both streams stamped from the one sample clock.

Every path that writes a file uses it: ``facecast render`` (``runtime.offline.render``), the
webcam evaluation's driven video (``runtime.evals.webcam``) and ``facecast cam --record``
(``runtime.local.sinks.Recorder``).

Video frame n and its audio slice both get pts = ``clock.frame_start(n)`` = ⌊n · 48000 / fps⌋
in a 1/48000 time base (``runtime.clock.AvClock``), so the two streams cannot drift apart. A
frame without a picture (dropped live) leaves a gap in the video, never in the audio.

The file is written under a temporary name beside the output (``.NAME.XXXX.part``) and renamed
into place only by ``close()``, so a failure never leaves a half-written MP4 behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np

from runtime.clock import AvClock

CRF = 20
"""Default x264 constant rate factor (0–51, lower is better quality)."""
PRESET = "veryfast"
"""Default x264 speed preset."""


def even_pad(image: np.ndarray) -> np.ndarray:
    """H.264 4:2:0 needs even sides: ``image`` (uint8 [H, W, 3]) with the last row and/or column
    replicated where a side is odd (the array itself when both are even)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def temporary_output(out_path: str | os.PathLike[str]) -> Path:
    """Create (and return) an empty temporary file beside ``out_path`` (``.NAME.XXXX.part``,
    the usual file mode).

    Raises ``IsADirectoryError`` when ``out_path`` is a folder, ``FileNotFoundError`` when its
    folder is missing, ``PermissionError`` when the folder is not writable, each with a
    one-line reason.
    """
    out = Path(out_path)
    if out.is_dir():
        raise IsADirectoryError(f"output path is a folder: {out}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise PermissionError(f"cannot write to {folder}: {exc.strerror or exc}") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes it 0600; the MP4 gets the usual mode
    return Path(name)


class Mp4Writer:
    """H.264 + AAC MP4 on one clock, written to a temporary file and renamed into place.

    Args:
        path: the MP4 to write (replaced atomically by ``close()``).
        clock: the sample clock (frame rate and output sample rate) of both streams.
        width, height: pixel size of the images that will be written; an odd side is padded
            by one replicated row/column (``even_pad``), so ``self.width``/``self.height``
            are the even sizes of the file.
        crf, preset: libx264 quality and speed.
        credentials: called with the finished temporary file before it is renamed into place
            (``runtime.provenance.c2pa.sign_file``, which embeds the file's C2PA manifest); an
            error it raises removes the file, so no unsigned file is left at ``path``.

    Use as a context manager (``close()`` on success, ``abort()`` on an exception) or call
    ``write`` / ``close`` / ``abort`` directly. ``frames`` counts pictures written,
    ``audio_samples`` audio samples written.

    Raises ``OSError`` (see ``temporary_output``) when the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str], clock: AvClock, width: int, height: int,
                 crf: int = CRF, preset: str = PRESET,
                 credentials: Callable[[Path], object] | None = None) -> None:
        import av

        self.path = Path(path)
        self._credentials = credentials
        self.clock = clock
        self.width, self.height = width + width % 2, height + height % 2
        self.frames = 0
        self.audio_samples = 0
        self._tmp = temporary_output(self.path)
        self._done = False
        try:
            self._container = av.open(str(self._tmp), "w", format="mp4")
            video = self._container.add_stream("libx264", rate=clock.fps)
            video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
            video.time_base = clock.time_base
            video.codec_context.time_base = clock.time_base
            video.options = {"crf": str(crf), "preset": preset}
            sound = self._container.add_stream("aac", rate=clock.sample_rate, layout="mono")
            sound.time_base = clock.time_base
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._video, self._sound = video, sound

    def write(self, n: int, image: np.ndarray | None, audio: np.ndarray) -> None:
        """Encode video frame ``n`` and its audio slice, both with pts ``clock.frame_start(n)``.

        Args:
            n: frame index on the clock (≥ 0, increasing from call to call).
            image: uint8 [height, width, 3] RGB (odd sides padded), or None: no picture for
                this frame (the previous one stays on screen).
            audio: float32 [S_n] mono in [-1, 1] at ``clock.sample_rate``: output samples
                [frame_start(n), frame_start(n + 1)).

        Raises ``ValueError`` for an image of another size or an audio slice of another
        length; ``RuntimeError`` after ``close``/``abort``.
        """
        import av

        if self._done:
            raise RuntimeError(f"{self.path}: the MP4 writer is closed")
        start = self.clock.frame_start(n)
        want = self.clock.frame_start(n + 1) - start
        if len(audio) != want:
            raise ValueError(f"frame {n}: audio slice of {len(audio)} samples, the clock says "
                             f"{want}")
        tb = self.clock.time_base
        if image is not None:
            image = even_pad(image)
            if image.shape != (self.height, self.width, 3):
                raise ValueError(f"frame {n}: image {image.shape}, the file is "
                                 f"{self.height}x{self.width}x3")
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = start, tb
            self._container.mux(self._video.encode(frame))
            self.frames += 1
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32)[None],
                                           format="flt", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = self.clock.sample_rate, start, tb
        self._container.mux(self._sound.encode(chunk))
        self.audio_samples += want

    def close(self) -> Path:
        """Flush both encoders, finish the file and rename it into place; returns ``path``.
        On an error the temporary file is removed and the error re-raised."""
        if self._done:
            return self.path
        self._done = True
        try:
            self._container.mux(self._video.encode(None))
            self._container.mux(self._sound.encode(None))
            self._container.close()
            if self._credentials is not None:
                self._credentials(self._tmp)
            os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        """Stop without keeping anything (safe to call twice, or after ``close``)."""
        if self._done:
            return
        self._done = True
        try:
            with contextlib.suppress(Exception):  # the file is discarded either way
                self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
