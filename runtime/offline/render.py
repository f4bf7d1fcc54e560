"""Offline rendering: speech audio (or text through a TTS) → talking-avatar MP4.

features → motion model → behaviour → rig → renderer → compositor → H.264 + AAC in MP4 (the one
writer, ``runtime.offline.mp4``). Frames and audio share one clock (``runtime.clock``): video
frame n and its audio slice both get pts = ⌊n · 48000 / fps⌋ in a 1/48000 time base. The file is
written under a temporary name and renamed into place only when complete, so a failure never
leaves a half-written MP4 behind.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatars.bundle import Avatar
from engines.audio import OUTPUT_SAMPLE_RATE, SAMPLE_RATE
from runtime.clock import AvClock, as_fps
from runtime.offline.mp4 import Mp4Writer
from runtime.provenance.disclosure import Badge

LEAD_IN_S = 0.3
"""Silence before synthesised speech (text renders), so the face starts at rest."""
TAIL_S = 0.5
"""Silence after synthesised speech."""
MIN_AUDIO_S = 0.05
"""Shortest audio rendered (one 25 ms analysis window plus margin)."""
QUEUE_BATCHES = 2
"""Rendered batches buffered between the renderer thread and the encoder (backpressure)."""


@dataclass(frozen=True)
class RenderOptions:
    """How to render.

    Attributes:
        fps: video frame rate (exact fraction or number, 1–240).
        size: renderer crop side R in pixels (256 or 512).
        backend: renderer backend (``engines.renderer.BACKENDS``).
        seed: behaviour seed (blinks, head motion): same seed, same video.
        batch: frames per renderer call.
        crf: x264 constant rate factor (0–51, lower is better quality).
        preset: x264 speed preset.
        threads: ONNX Runtime threads (None: its default).
        badge: the disclosure badge in every frame (``runtime.provenance.disclosure.Badge``; None: off).
        watermark: the invisible watermark in every frame (``runtime.provenance.watermark``;
            False: off, logged).
        c2pa: embed signed C2PA credentials in the MP4 (``runtime.provenance.c2pa``); the file
            is not kept when signing fails. c2pa_identity: the signing
            ``runtime.provenance.c2pa.Identity`` (None: ``resolve_identity()``, the
            environment's or the local development one). speech: where the words came from,
            for the credentials (``"tts:espeak-ng en-us"``, ``"audio:talk.wav"``).
    """

    fps: float | str = 25
    size: int = 512
    backend: str = "auto"
    seed: int = 0
    batch: int = 8
    crf: int = 20
    preset: str = "veryfast"
    threads: int | None = None
    badge: Badge | None = field(default_factory=Badge)
    watermark: bool = True
    c2pa: bool = True
    c2pa_identity: object | None = None
    speech: str = "audio"


@dataclass(frozen=True)
class RenderResult:
    """What a render produced: output path, audio seconds, video frames, fps, renderer crop
    side, video width × height in pixels, wall-clock seconds, and real-time factor (wall ÷
    audio; under 1 means faster than real time); ``adapted``: whether the renderer ran on the
    avatar's ``facecast adapt`` features."""

    path: Path
    audio_seconds: float
    frames: int
    fps: float
    size: int
    width: int
    height: int
    render_seconds: float
    backend: str
    animation: Animation | None = None
    """The rig input of every frame (known coefficients and pose; ``animate``)."""
    adapted: bool = False

    @property
    def real_time_factor(self) -> float:
        return self.render_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"{self.path}: {self.audio_seconds:.2f} s of audio, {self.frames} frames at "
                f"{self.fps:g} fps, {self.width}x{self.height} (face {self.size} px, "
                f"{self.backend}), rendered in {self.render_seconds:.1f} s, real-time factor "
                f"{self.real_time_factor:.2f}")

    def to_json(self) -> dict:
        return {"path": str(self.path), "audio_seconds": round(self.audio_seconds, 3),
                "frames": self.frames, "fps": self.fps, "size": self.size,
                "width": self.width, "height": self.height, "backend": self.backend,
                "render_seconds": round(self.render_seconds, 3),
                "real_time_factor": round(self.real_time_factor, 3), "adapted": self.adapted}


@dataclass(frozen=True)
class Animation:
    """The rig input of every video frame: coeffs float64 [F, 19], pose float64 [F, 6], and the
    behaviour's blink list (for inspection)."""

    coeffs: np.ndarray
    pose: np.ndarray
    blinks: list


def animate(audio16k: np.ndarray, n_frames: int, fps: float, seed: int = 0) -> Animation:
    """Speech → per-frame rig input: motion model (100 Hz) resampled to the video frames,
    prosody, then the behaviour layer.

    Args:
        audio16k: float32 [N] mono at 16 kHz. n_frames: F video frames to produce.
        fps: frame rate. seed: behaviour seed.
    """
    from engines.motion import MotionEngine, resample_to_fps
    from runtime.animation.behaviour import Behaviour
    from runtime.audio.prosody import prosody_frames

    track = MotionEngine().offline(audio16k, SAMPLE_RATE)
    mouth = resample_to_fps(track.coeffs, fps, n_frames)
    vad = resample_to_fps(track.vad[:, None], fps, n_frames)[:, 0]
    prosody = prosody_frames(audio16k, SAMPLE_RATE, fps, n_frames)
    behaviour = Behaviour(fps, seed=seed)
    coeffs, pose = behaviour.run(mouth, vad, prosody.energy_db, prosody.f0_hz)
    return Animation(coeffs, pose, list(behaviour.blinks))


def _put(out: queue.Queue, item: object, stop: threading.Event) -> None:
    """Put with backpressure, giving up once ``stop`` is set (the consumer has gone)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _render_batches(renderer, source, keypoints: np.ndarray, batch: int,
                    out: queue.Queue, stop: threading.Event) -> None:
    """Renderer thread: crops uint8 [b, R, R, 3] per batch into ``out``; None at the end; an
    exception object if rendering fails."""
    from engines.renderer import to_uint8

    try:
        for i in range(0, len(keypoints), batch):
            if stop.is_set():
                return
            _put(out, to_uint8(renderer.render(source, keypoints[i:i + batch])), stop)
        _put(out, None, stop)
    except Exception as exc:  # noqa: BLE001 - handed to the encoder thread, which re-raises it
        _put(out, exc, stop)


def _crops(q: queue.Queue) -> Iterator[np.ndarray]:
    while True:
        item = q.get()
        if item is None:
            return
        if isinstance(item, Exception):
            raise item
        yield from item


def file_credentials(avatar: Avatar, options: RenderOptions):
    """The ``Mp4Writer`` credentials callback for a render of ``avatar`` with ``options``:
    signs the finished file with a manifest saying what made it (``runtime.provenance.c2pa``).
    """
    from runtime.provenance.c2pa import Provenance, mp4_signer

    return mp4_signer(Provenance(avatar.name, avatar.metadata, options.speech,
                                 options.badge is not None, options.watermark),
                      options.c2pa_identity)


def render_audio(avatar: Avatar, audio: np.ndarray, sample_rate: int, out_path: str | Path,
                 options: RenderOptions = RenderOptions(),
                 progress: Callable[[int, int], None] | None = None) -> RenderResult:
    """Render ``avatar`` speaking ``audio`` into an MP4 at ``out_path``.

    Args:
        avatar: a loaded avatar bundle.
        audio: float32 [N] mono in [-1, 1]. sample_rate: its rate in Hz (any).
        out_path: the MP4 to write (replaced atomically when done).
        options: see ``RenderOptions``.
        progress: called as progress(frames_done, frames_total) after each encoded frame.

    Returns a ``RenderResult``. Raises ValueError for audio that is not mono, not finite, or
    shorter than ``MIN_AUDIO_S``; OSError if the output cannot be written; the renderer's own
    errors for a bad backend. Nothing is left at ``out_path`` (or beside it) on failure.
    """
    from avatars.rig import Rig
    from engines.renderer import NeuralRenderer
    from runtime.audio.resample import resample
    from runtime.compositor import Compositor

    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono [N], got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError("audio contains non-finite samples")
    if a.size < MIN_AUDIO_S * sample_rate:
        raise ValueError(f"audio is {a.size / sample_rate * 1000:.0f} ms long; at least "
                         f"{MIN_AUDIO_S * 1000:.0f} ms are needed")
    fps = as_fps(options.fps)
    clock = AvClock(fps, OUTPUT_SAMPLE_RATE)
    out_path = Path(out_path)
    height, width = avatar.image.shape[:2]
    writer = Mp4Writer(out_path, clock, width, height, options.crf, options.preset,
                       credentials=file_credentials(avatar, options) if options.c2pa else None)
    started = time.perf_counter()
    stop = threading.Event()
    worker: threading.Thread | None = None
    try:
        renderer = NeuralRenderer(options.size, options.backend, threads=options.threads)
        source = renderer.prepare(avatar)
        a48 = resample(a, sample_rate, OUTPUT_SAMPLE_RATE)
        a16 = resample(a, sample_rate, SAMPLE_RATE)
        n_frames = clock.frames_for(len(a48))
        a48 = np.pad(a48, (0, clock.frame_start(n_frames) - len(a48)))
        anim = animate(a16, n_frames, float(fps), options.seed)
        rig = Rig.for_avatar(avatar, options.size)
        keypoints = rig.keypoints(anim.coeffs, anim.pose)
        compositor = Compositor(avatar, options.size, options.badge, options.watermark)

        crops: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        worker = threading.Thread(target=_render_batches, name="facecast-render",
                                  args=(renderer, source, keypoints, max(1, options.batch),
                                        crops, stop), daemon=True)
        worker.start()
        for n, crop in enumerate(_crops(crops)):
            writer.write(n, compositor.paste(crop),
                         a48[clock.frame_start(n):clock.frame_start(n + 1)])
            if progress is not None:
                progress(n + 1, n_frames)
        worker.join()
        writer.close()
    except BaseException:
        stop.set()
        if worker is not None:
            worker.join(timeout=5)
        writer.abort()
        raise
    return RenderResult(out_path, len(a) / sample_rate, n_frames, float(fps), options.size,
                        writer.width, writer.height, time.perf_counter() - started,
                        renderer.backend, anim, source.adapted)


def render_text(avatar: Avatar, text: str, out_path: str | Path, tts=None, voice: str | None = None,
                options: RenderOptions = RenderOptions(),
                progress: Callable[[int, int], None] | None = None) -> RenderResult:
    """Speak ``text`` with ``tts`` (``runtime.audio.tts``; default espeak-ng) and render it, with
    ``LEAD_IN_S`` of silence before and ``TAIL_S`` after. Raises as ``render_audio`` plus the
    TTS's errors (ValueError for empty or overlong text or an unknown voice)."""
    from runtime.audio.tts import check_text, make_tts

    check_text(text)
    engine = tts or make_tts()
    speech = engine.synthesize(text, voice)
    rate = speech.sample_rate
    audio = np.concatenate([np.zeros(int(LEAD_IN_S * rate), np.float32), speech.audio,
                            np.zeros(int(TAIL_S * rate), np.float32)])
    if options.speech == RenderOptions.speech:
        from dataclasses import replace

        options = replace(options, speech=f"tts:{getattr(engine, 'name', 'tts')}"
                                          + (f" {voice}" if voice else ""))
    return render_audio(avatar, audio, rate, out_path, options, progress)


def terminal_progress(total_hint: str = "render"
                      ) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm progress bar on stderr when it is a terminal (no output otherwise).

    Returns (update(done, total), close()).
    """
    if not sys.stderr.isatty():
        return (lambda done, total: None), (lambda: None)
    import shutil

    from tqdm import tqdm

    # shutil falls back to $COLUMNS/$LINES or 80×24 where a pty reports a size of 0×0; tqdm left
    # to itself then hides the bar (its row would be off a 0-row screen)
    size = shutil.get_terminal_size()
    ncols, nrows = min(size.columns, 100), size.lines

    bar: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, unit="frame", desc=total_hint, file=sys.stderr,
                              leave=False, ncols=ncols, nrows=nrows)
        bar["bar"].update(done - bar["bar"].n)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return update, close
