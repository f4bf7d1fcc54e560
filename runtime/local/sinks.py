"""Where ``facecast cam`` sends its frames: a virtual camera, a preview window, an MP4 file.

Every sink takes the same calls, from one sink thread (``runtime.local.cam``), in frame order:

* ``write(index, frame, audio)``: output frame ``index`` (an ``av.VideoFrame`` rgb24 whose pts
  is ``index · S`` in a 1/48000 time base, S = 48000 / fps; or None when the renderer dropped the
  frame) and its audio slice, float32 [S] at 48 kHz, samples [index · S, (index + 1) · S) of the
  output clock;
* ``close()``: finish (the recorder renames its file into place only here).

``VirtualCamera`` (pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera on Windows and
macOS, Unity Capture on Windows) shows the avatar to Zoom, Meet or Teams as a camera. It plays
no audio: the call app takes the user's own microphone, so the voice passes through unchanged.
``PreviewWindow`` shows the frames on screen (OpenCV's ``imshow`` when the OpenCV build has a
GUI; the project pins opencv-python-headless, which has none, so otherwise a small Tk window).
``Recorder`` writes H.264 + AAC to MP4 with PyAV, both streams stamped from the session's sample
counter: audio is the master clock, as in ``facecast render``.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE


class SinkUnavailable(OSError):
    """An output that cannot be used on this machine (no virtual camera, no display …);
    the message says what to install or do."""


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


class VirtualCamera:
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
        self.frames = 0

    def write(self, index: int, frame, audio: np.ndarray) -> None:
        """Send frame ``index`` (None: dropped; the camera keeps showing the previous one).
        Audio is ignored: the call app uses the user's own microphone."""
        if frame is None:
            return
        self.camera.send(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
        self.frames += 1

    def close(self) -> None:
        self.camera.close()


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


class PreviewWindow:
    """An on-screen window showing the frames, in its own thread (GUI toolkits want one thread).

    OpenCV's ``imshow`` is used when the installed OpenCV has a GUI backend; the project's
    opencv-python-headless has none, so the fallback is a Tk window (Python's ``tkinter``,
    Debian package python3-tk; bundled with the python.org builds for Windows and macOS) showing
    the frames through Pillow's ``ImageTk``. Closing the window (or Esc / q) sets ``closed``.

    Args:
        title: window title.
        backend: "auto", "opencv" or "tk".

    Raises SinkUnavailable: no display, no usable GUI toolkit, or the window could not open.
    """

    name = "preview"

    def __init__(self, title: str = "facecast", backend: str = "auto") -> None:
        problem = display_problem()
        if problem:
            raise SinkUnavailable(problem)
        if backend == "auto":
            backend = "opencv" if _opencv_has_gui() else "tk"
        self.backend = backend
        self.title = title
        self.closed = threading.Event()
        self.shown = 0
        self._latest: queue.Queue = queue.Queue(maxsize=1)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="facecast-preview", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise SinkUnavailable(f"cannot open a preview window ({self.backend}): "
                                  f"{self._error}") from self._error

    def write(self, index: int, frame, audio: np.ndarray) -> None:
        """Show frame ``index`` (the newest replaces one not yet shown; None is skipped)."""
        if frame is None or self.closed.is_set():
            return
        image = frame.to_ndarray(format="rgb24")
        try:
            self._latest.get_nowait()
        except queue.Empty:
            pass
        self._latest.put_nowait(image)

    def close(self) -> None:
        self.closed.set()
        self._thread.join(3)

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

    def _run_opencv(self) -> None:
        import cv2

        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE)
        self._ready.set()
        try:
            while not self.closed.is_set():
                try:
                    image = self._latest.get(timeout=0.02)
                    cv2.imshow(self.title, image[:, :, ::-1])
                    self.shown += 1
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
                self.shown += 1
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


class Recorder:
    """H.264 + AAC MP4 of the session's frames and audio (PyAV), on the session's clock.

    Video frame n and its audio slice both get pts n · S in a 1/48000 time base (the frames
    arrive stamped so; audio is the master clock). A frame the renderer dropped leaves a gap in
    the video (the previous frame stays on screen), never in the audio. The file is written as
    ``.NAME.XXXX.part`` beside ``path`` and renamed into place by ``close()``; ``abort()``
    removes it.

    Args:
        path: output .mp4 (its folder must exist and be writable).
        width, height: frame size (even).
        fps: nominal frame rate (stream metadata; pts decide timing).
        crf, preset: libx264 quality and speed.

    Raises SinkUnavailable: the folder is missing or not writable, or ``path`` is a folder.
    """

    name = "record"

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: int,
                 crf: int = 20, preset: str = "veryfast") -> None:
        import av

        self.path = Path(path)
        if self.path.is_dir():
            raise SinkUnavailable(f"--record {self.path} is a folder; give a file name")
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise SinkUnavailable(f"--record: folder {folder} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=folder)
        except OSError as exc:
            raise SinkUnavailable(f"--record: cannot write in {folder}: {exc.strerror}") from exc
        os.close(fd)
        self._tmp = Path(tmp)
        self.time_base = Fraction(1, OUTPUT_SAMPLE_RATE)
        self.container = av.open(str(self._tmp), "w", format="mp4")
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.options = {"crf": str(crf), "preset": preset}
        self.video.codec_context.time_base = self.time_base
        self.audio = self.container.add_stream("aac", rate=OUTPUT_SAMPLE_RATE, layout="mono")
        self.audio.codec_context.time_base = self.time_base
        self.frames = 0
        self.audio_samples = 0
        self._closed = False

    def write(self, index: int, frame, audio: np.ndarray) -> None:
        """Encode frame ``index`` (None: no picture for it) and its audio slice."""
        import av

        first = index * len(audio)
        if frame is not None:
            frame.pts, frame.time_base = first, self.time_base
            self.container.mux(self.video.encode(frame))
            self.frames += 1
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32)[None],
                                           format="flt", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = OUTPUT_SAMPLE_RATE, first, self.time_base
        self.container.mux(self.audio.encode(chunk))
        self.audio_samples += len(audio)

    def close(self) -> None:
        """Flush the encoders and move the file into place."""
        if self._closed:
            return
        self._closed = True
        try:
            self.container.mux(self.video.encode(None))
            self.container.mux(self.audio.encode(None))
            self.container.close()
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
            raise SinkUnavailable("--record: no frame was rendered; nothing written")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Stop without keeping the file."""
        if self._closed:
            return
        self._closed = True
        try:
            self.container.close()
        finally:
            self._tmp.unlink(missing_ok=True)
