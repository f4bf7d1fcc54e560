"""Video input for webcam-driven mode: frames from a camera (OpenCV) or a video file (PyAV).

``VideoSource`` opens a camera index / V4L2 device (``cv2.VideoCapture``, V4L2 on Linux) or any
file FFmpeg decodes, and yields ``Frame`` objects (uint8 RGB, a time in seconds, an index).
Everything that can go wrong at open time is a clear error before anything starts: a missing
file (``FileNotFoundError``), a file that is not a video (``ValueError``), a camera that does
not exist, is busy or delivers nothing (``CameraError``, an ``OSError``). A file can be played
in real time (``realtime=True``) and looped, so it can stand in for a camera in a live session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from typing import Self


class CameraError(OSError):
    """A camera that does not exist, is busy (opened by another program) or delivers no frames."""


@dataclass(frozen=True)
class Frame:
    """One video frame: ``rgb`` uint8 [H, W, 3] (RGB order), ``time`` seconds (a file's
    presentation time, or seconds since a camera was opened), ``index`` from 0."""

    rgb: np.ndarray
    time: float
    index: int


def _camera_index(source: int | str | os.PathLike) -> int | None:
    """The V4L2 index a source names (``0``, ``"0"``, ``"/dev/video0"``), else None (a file)."""
    if isinstance(source, bool):
        raise TypeError("video source must be a camera index or a path, not a bool")
    if isinstance(source, int):
        return source
    s = str(source)
    if s.isdigit():
        return int(s)
    if s.startswith("/dev/video") and s[len("/dev/video"):].isdigit():
        return int(s[len("/dev/video"):])
    return None


class VideoSource:
    """Frames from a camera (OpenCV ``cv2.VideoCapture``) or a video file (PyAV).

    Args:
        source: a camera index (``0``, ``"0"``), a V4L2 device path (``"/dev/video0"``), or a
            path to any video FFmpeg decodes (MP4, WebM, MKV, …).
        width, height, fps: requested camera mode (a camera may pick the nearest it has);
            ignored for files.
        realtime: for files, deliver frames no faster than their presentation times (to feed a
            file to a live session as if it were a camera). Cameras are always real time.
        loop: for files, start again at the end instead of stopping.

    Raises:
        FileNotFoundError: a file path that does not exist.
        ValueError: a file that is not a readable video, or has no video stream.
        CameraError (an ``OSError``): no camera at that index, a camera that cannot be opened
            (busy, permission) or that delivers no frame within ``CAMERA_FIRST_FRAME_S``.

    ``read()`` returns the next ``Frame`` or None at the end of a file; iteration yields frames
    until the end. Use as a context manager or call ``close()``.
    """

    CAMERA_FIRST_FRAME_S = 5.0
    """How long a camera may take to deliver its first frame before it counts as unusable."""

    def __init__(self, source: int | str | os.PathLike, width: int | None = None,
                 height: int | None = None, fps: float | None = None, realtime: bool = False,
                 loop: bool = False) -> None:
        self.source = source
        self.realtime = realtime
        self.loop = loop
        self._index = 0
        self._cap = None
        self._container = None
        self._frames: Iterator | None = None
        self._pending: np.ndarray | None = None
        self._t0 = time.monotonic()
        self._file_offset = 0.0
        self._last_time = 0.0
        self.camera = _camera_index(source)
        if self.camera is not None:
            self._open_camera(width, height, fps)
        else:
            self.path = Path(source)
            if not self.path.exists():
                raise FileNotFoundError(f"video file not found: {self.path}")
            if self.path.is_dir():
                raise ValueError(f"video source is a folder, not a video file: {self.path}")
            self._open_file()

    @property
    def is_camera(self) -> bool:
        """True for a camera, False for a video file."""
        return self.camera is not None

    def _open_camera(self, width: int | None, height: int | None, fps: float | None) -> None:
        import cv2

        dev = Path(f"/dev/video{self.camera}")
        if os.name == "posix" and Path("/dev").is_dir() and not dev.exists():
            found = sorted(p.name for p in Path("/dev").glob("video[0-9]*"))
            listing = ", ".join(found) if found else "none"
            raise CameraError(f"no camera {self.camera}: {dev} does not exist "
                              f"(video devices here: {listing})")
        backend = cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.camera, backend)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"camera {self.camera} cannot be opened: it is busy (another "
                              "program is using it) or this user may not read it (video group)")
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
        if fps:
            cap.set(cv2.CAP_PROP_FPS, float(fps))
        deadline = time.monotonic() + self.CAMERA_FIRST_FRAME_S
        ok, bgr = cap.read()
        while not ok and time.monotonic() < deadline:
            time.sleep(0.05)
            ok, bgr = cap.read()
        if not ok or bgr is None:
            cap.release()
            raise CameraError(f"camera {self.camera} opened but delivered no frame in "
                              f"{self.CAMERA_FIRST_FRAME_S:g} s (busy, or not a capture device)")
        self._cap = cap
        self._pending = bgr
        self._t0 = time.monotonic()
        self.height, self.width = bgr.shape[:2]
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None

    def _open_file(self) -> None:
        import av

        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ValueError(f"cannot decode {self.path}: not a readable video ({why})") from None
        if not container.streams.video:
            container.close()
            raise ValueError(f"{self.path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self._container = container
        self._frames = container.decode(stream)
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._t0 = time.monotonic()

    def read(self) -> Frame | None:
        """The next frame, or None at the end of a file. Raises CameraError when a camera stops
        delivering frames (unplugged) and ValueError when a file is damaged mid-way."""
        if self._cap is not None:
            import cv2

            if self._pending is not None:
                bgr, self._pending = self._pending, None
            else:
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    raise CameraError(f"camera {self.camera} stopped delivering frames")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frame = Frame(rgb, time.monotonic() - self._t0, self._index)
            self._index += 1
            return frame
        if self._frames is None:
            return None
        import av

        try:
            vf = next(self._frames, None)
        except av.FFmpegError as exc:
            raise ValueError(f"{self.path}: decoding failed at frame {self._index}: {exc}") \
                from None
        if vf is None:
            if not self.loop or self._index == 0:
                return None
            self._file_offset = self._last_time + (1.0 / self.fps if self.fps else 0.04)
            self._container.close()
            self._open_file()
            self._t0 -= self._file_offset
            return self.read()
        t = self._file_offset + (float(vf.time) if vf.time is not None
                                 else self._index / (self.fps or 25.0))
        self._last_time = t
        if self.realtime:
            wait = t - (time.monotonic() - self._t0)
            if wait > 0:
                time.sleep(wait)
        frame = Frame(vf.to_ndarray(format="rgb24"), t, self._index)
        self._index += 1
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        """Release the camera or close the file (idempotent)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._container is not None:
            self._container.close()
            self._container = None
            self._frames = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
