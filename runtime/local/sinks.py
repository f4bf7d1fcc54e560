"""Where ``facecast cam`` sends its frames: a virtual camera, a preview window, an MP4 file.

Every sink is a ``Sink`` and takes the same calls, from one sink thread (``runtime.local.cam``),
in frame order:

* ``write(index, frame, audio)``: output frame ``index`` (uint8 [H, W, 3] RGB, or None when the
  renderer dropped the frame) and its audio slice, float32 [S] at 48 kHz
  (``engines.audio.OUTPUT_SAMPLE_RATE``), samples [index · S, (index + 1) · S) of the output
  clock (``runtime.clock.AvClock``), S = 48000 / fps; the pts of both is index · S;
* ``close(abort=False)``: finish, or with ``abort`` stop without keeping anything (the recorder
  renames its file into place only on a plain close), returning a one-line summary.

A sink that can end by itself (the preview window closed by the user) says so to the callback
its owner gave ``watch()``, from whatever thread notices: a push, nobody polls.

``VirtualCamera`` (pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera on Windows and
macOS, Unity Capture on Windows) shows the avatar to Zoom, Meet or Teams as a camera. It plays
no audio: the call app takes the user's own microphone, so the voice passes through unchanged.
``PreviewWindow`` shows the frames on screen (OpenCV's ``imshow`` when the OpenCV build has a
GUI; the project pins opencv-python-headless, which has none, so otherwise a small Tk window).
``Recorder`` writes H.264 + AAC to MP4 with the one MP4 writer (``runtime.offline.mp4``), both
streams stamped from the session's sample counter: audio is the master clock, as in ``facecast
render``.
"""

from __future__ import annotations

import abc
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np


class SinkUnavailable(OSError):
    """An output that cannot be used on this machine (no virtual camera, no display …);
    the message says what to install or do."""


class Sink(abc.ABC):
    """Where output frames go (see the module docstring for the calls and their order).

    Attributes:
        name: the output's name in reports (``vcam``, ``preview``, ``record``).
        frames: frames written (sent, shown, encoded) so far.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.frames = 0
        self._end_lock = threading.Lock()
        self._on_end: Callable[[str], None] | None = None
        self._end_reason: str | None = None

    def watch(self, on_end: Callable[[str], None]) -> None:
        """Have ``on_end(reason)`` called once, from any thread, when the sink ends by itself
        (a window closed by the user); at once if it already has."""
        with self._end_lock:
            self._on_end, reason = on_end, self._end_reason
        if reason is not None:
            on_end(reason)

    def _ended(self, reason: str) -> None:
        """For subclasses, any thread: the sink has ended by itself; tell the watcher once."""
        with self._end_lock:
            if self._end_reason is not None:
                return
            self._end_reason, on_end = reason, self._on_end
        if on_end is not None:
            on_end(reason)

    @property
    @abc.abstractmethod
    def target(self) -> str | None:
        """Where the frames go, for reports: a file path, a camera device, a window backend."""

    @abc.abstractmethod
    def write(self, index: int, frame: np.ndarray | None, audio: np.ndarray) -> None:
        """Take output frame ``index``: uint8 [H, W, 3] RGB or None (dropped by the renderer),
        and its audio, float32 [S] at 48 kHz. May raise; the caller then closes the sink with
        ``abort=True`` and stops writing to it."""

    @abc.abstractmethod
    def close(self, abort: bool = False) -> str:
        """Finish (``abort``: without keeping anything) and release the device or file; safe to
        call twice. Returns a one-line summary. Raises ``SinkUnavailable`` or ``OSError`` when
        the output could not be finished."""


def vcam_install_hint(platform: str | None = None) -> str:
    """What to install for a virtual camera on ``platform`` (``sys.platform`` by default)."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return ("install and load v4l2loopback: sudo apt install v4l2loopback-dkms && "
                "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                "card_label=\"facecast\" (then the camera is /dev/videoN; in a container the "
                "device must be passed in)")
    if platform == "darwin":
        return ("install OBS Studio (28 or newer), then start its Virtual Camera once "
                "(Start Virtual Camera, then Stop) so the camera extension is registered")
    return ("install OBS Studio (26 or newer; its Virtual Camera is the backend) or Unity "
            "Capture, then retry")


class VirtualCamera(Sink):
    """Frames to a virtual camera through pyvirtualcam, RGB, at the session's size and rate.

    Args:
        width, height: frame size in pixels (the avatar image, even sides).
        fps: frame rate announced to the camera.
        device: backend-specific device (``/dev/video2`` on Linux); None: the first free one.
        backend: pyvirtualcam backend name (``v4l2loopback``, ``obs``, ``unitycapture``);
            None: the platform default.

    Raises SinkUnavailable when pyvirtualcam is missing or no backend exists (no v4l2loopback
    device, OBS not installed …), with what to install.
    """

    name = "vcam"

    def __init__(self, width: int, height: int, fps: float, device: str | None = None,
                 backend: str | None = None) -> None:
        super().__init__()
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise SinkUnavailable("--vcam needs pyvirtualcam: pip install pyvirtualcam==0.15.0; "
                                  "and a backend: " + vcam_install_hint()) from exc
        try:
            self.camera = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                              device=device, backend=backend, print_fps=False)
        except (RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).split(" See also")[0].strip() or type(exc).__name__
            raise SinkUnavailable(f"no virtual camera available ({reason}); "
                                  + vcam_install_hint()) from exc
        self.device = self.camera.device
        self._closed = False

    @property
    def target(self) -> str | None:
        """The camera device (``/dev/video2``; a backend's name elsewhere)."""
        return self.device

    def write(self, index: int, frame: np.ndarray | None, audio: np.ndarray) -> None:
        """Send frame ``index`` (None: dropped; the camera keeps showing the previous one).
        Audio is ignored: the call app uses the user's own microphone."""
        if frame is None:
            return
        self.camera.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self, abort: bool = False) -> str:
        """Release the camera (nothing to keep or discard: ``abort`` changes nothing)."""
        if not self._closed:
            self._closed = True
            self.camera.close()
        return f"{self.frames} frames to the virtual camera {self.device}"


def display_problem(platform: str | None = None, env: dict | None = None) -> str | None:
    """Why no window can be shown here, or None if a display seems to exist (Linux/BSD: needs
    ``$DISPLAY`` or ``$WAYLAND_DISPLAY``; Windows and macOS always have one)."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    if platform.startswith(("win", "darwin")) or platform == "cygwin":
        return None
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("no display: $DISPLAY is not set (a headless machine or an SSH session without "
                "X forwarding); use --record OUT.mp4 or --vcam instead")
    return None


def _opencv_has_gui() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    return False


class PreviewWindow(Sink):
    """An on-screen window showing the frames, in its own thread (GUI toolkits want one thread).

    OpenCV's ``imshow`` is used when the installed OpenCV has a GUI backend; the project's
    opencv-python-headless has none, so the fallback is a Tk window (Python's ``tkinter``,
    Debian package python3-tk; bundled with the python.org builds for Windows and macOS) showing
    the frames through Pillow's ``ImageTk``. Closing the window (or Esc / q) sets ``closed``.

    ``frames`` counts frames shown (a frame replaced before the window drew it is not).

    Args:
        title: window title.
        backend: "auto", "opencv" or "tk".

    Raises SinkUnavailable: no display, no usable GUI toolkit, or the window could not open.
    """

    name = "preview"

    def __init__(self, title: str = "facecast", backend: str = "auto") -> None:
        super().__init__()
        problem = display_problem()
        if problem:
            raise SinkUnavailable(problem)
        if backend == "auto":
            backend = "opencv" if _opencv_has_gui() else "tk"
        self.backend = backend
        self.title = title
        self.closed = threading.Event()
        self._closing = False
        self._latest: queue.Queue = queue.Queue(maxsize=1)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="facecast-preview", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise SinkUnavailable(f"cannot open a preview window ({self.backend}): "
                                  f"{self._error}") from self._error

    @property
    def target(self) -> str | None:
        """The GUI toolkit showing the window (``opencv`` or ``tk``)."""
        return self.backend

    def write(self, index: int, frame: np.ndarray | None, audio: np.ndarray) -> None:
        """Show frame ``index`` (the newest replaces one not yet shown; None is skipped)."""
        if frame is None or self.closed.is_set():
            return
        try:
            self._latest.get_nowait()
        except queue.Empty:
            pass
        self._latest.put_nowait(frame)

    def close(self, abort: bool = False) -> str:
        """Close the window (``abort`` changes nothing) and wait up to 3 s for its thread."""
        self._closing = True
        self.closed.set()
        self._thread.join(3)
        return f"{self.frames} frames shown ({self.backend})"

    # --- GUI thread ---------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            (self._run_opencv if self.backend == "opencv" else self._run_tk)()
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor or ends it
            if not self._ready.is_set():
                self._error = exc
        finally:
            self.closed.set()
            self._ready.set()
            if not self._closing:
                self._ended("window closed")

    def _run_opencv(self) -> None:
        import cv2

        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE)
        self._ready.set()
        try:
            while not self.closed.is_set():
                try:
                    image = self._latest.get(timeout=0.02)
                    cv2.imshow(self.title, image[:, :, ::-1])
                    self.frames += 1
                except queue.Empty:
                    pass
                key = cv2.waitKey(1) & 0xFF
                if key in (27, ord("q")) or \
                        cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    break
        finally:
            cv2.destroyWindow(self.title)

    def _run_tk(self) -> None:
        try:
            import tkinter as tk
        except ImportError as exc:
            raise RuntimeError("tkinter is missing (Debian/Ubuntu: sudo apt install python3-tk), "
                               "and the installed OpenCV has no GUI") from exc
        from PIL import Image, ImageTk

        root = tk.Tk()
        root.title(self.title)
        label = tk.Label(root, bg="black")
        label.pack()
        root.protocol("WM_DELETE_WINDOW", self.closed.set)
        root.bind("<Escape>", lambda _e: self.closed.set())
        root.bind("q", lambda _e: self.closed.set())
        self._ready.set()
        photo = None

        def poll() -> None:
            nonlocal photo
            if self.closed.is_set():
                root.quit()
                return
            try:
                image = self._latest.get_nowait()
                photo = ImageTk.PhotoImage(Image.fromarray(image))
                label.configure(image=photo)
                self.frames += 1
            except queue.Empty:
                pass
            root.after(10, poll)

        root.after(10, poll)
        try:
            root.mainloop()
        finally:
            # every Tk object must die in this thread: Tcl aborts the process otherwise
            root.destroy()
            photo = label = root = None
            import gc

            gc.collect()


class Recorder(Sink):
    """H.264 + AAC MP4 of the session's frames and audio, on the session's clock, through the one
    MP4 writer (``runtime.offline.mp4.Mp4Writer``).

    Video frame n and its audio slice both get pts n · S in a 1/48000 time base (audio is the
    master clock). A frame the renderer dropped leaves a gap in the video (the previous frame
    stays on screen), never in the audio. The file is written as ``.NAME.XXXX.part`` beside
    ``path`` and renamed into place by ``close()``; ``close(abort=True)`` removes it.

    Args:
        path: output .mp4 (its folder must exist and be writable).
        width, height: frame size (even).
        fps: frame rate (a divisor of 48000).
        crf, preset: libx264 quality and speed.

    Raises SinkUnavailable: the folder is missing or not writable, or ``path`` is a folder.
    """

    name = "record"

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: int,
                 crf: int = 20, preset: str = "veryfast", credentials=None) -> None:
        from runtime.clock import AvClock
        from runtime.offline.mp4 import Mp4Writer

        super().__init__()
        self.path = Path(path)
        try:
            self.writer = Mp4Writer(self.path, AvClock(fps), width, height, crf, preset,
                                    credentials=credentials)
        except OSError as exc:
            raise SinkUnavailable(f"--record: {exc}") from exc
        self._closed: str | None = None  # the summary, once closed

    @property
    def target(self) -> str | None:
        """The MP4's path."""
        return str(self.path)

    def write(self, index: int, frame: np.ndarray | None, audio: np.ndarray) -> None:
        """Encode frame ``index`` (None: no picture for it) and its audio slice."""
        self.writer.write(index, frame, audio)
        self.frames = self.writer.frames

    def close(self, abort: bool = False) -> str:
        """Flush the encoders and move the file into place (``abort``: remove it). Raises
        SinkUnavailable when no frame was written (nothing is kept)."""
        if self._closed is not None:
            return self._closed
        self._closed = f"{self.path} not written"
        if abort:
            self.writer.abort()
            return f"{self.path} not written"
        if self.writer.frames == 0:
            self.writer.abort()
            raise SinkUnavailable("--record: no frame was rendered; nothing written")
        self.writer.close()
        self._closed = (f"wrote {self.path}: {self.frames} frames, "
                        f"{self.writer.audio_samples / self.writer.clock.sample_rate:.1f} s of "
                        "audio")
        return self._closed
