"""``facecast cam``: the avatar speaks with the user's microphone, live, to a virtual camera, a
preview window and/or an MP4 file.

The pipeline is the server's (``runtime.live.session`` + ``runtime.live.scheduler``), without WebRTC:

    Microphone (PortAudio callback, 20 ms chunks at the device's rate, pushed into the event
      loop with call_soon_threadsafe, bounded queue)
      → MicFeed.push() (event loop: resampling to 48 kHz, a small jitter buffer)
      → CamSession.advance(): one 40 ms slice into the SpeechQueue  (scheduler's worker, per tick)
      → motion model, behaviour, rig, batched renderer, paste-back  (Scheduler, one clock)
      → CamSession.deliver() (event loop) → sink thread
      → Sinks: VirtualCamera / PreviewWindow / Recorder  (runtime.local.sinks)

``CamSession`` is a ``Session`` subclass: the only things it adds are feeding the speech queue
from the microphone at the start of each ``advance()`` and handing each delivered frame to the
sinks; the scheduler, the session's clock, delay line and tracks are the server's, untouched.
The microphone is one utterance that never ends (``mic``), so the session stays "speaking" and
the motion model sees one continuous stream.

**Jitter buffer.** The microphone's clock and the frame clock are independent. Each tick takes
exactly one slice (S = 48000 / fps samples) from what the microphone delivered, or nothing if a
whole slice has not arrived yet (the tick plays silence; ``underruns``), which leaves one slice
of margin for later ticks. If more than ``MAX_BACKLOG_SLICES`` slices wait after a tick (the
microphone's clock runs fast, or capture came in a burst), the oldest audio is cut down to one
slice (``trimmed_ms``), so latency cannot creep up over a long call.

**Latency** (``latency_ms`` in the report), like the server's speech latency: for every captured
chunk, from the moment PortAudio handed it over (``Chunk.t_capture``, its last sample just
captured) to the moment the frame that carries that sample, with its mouth, is handed to the
sinks. It is made of waiting for the next tick (≤ 1 frame), the jitter margin, the motion
model's lookahead (K frames, 80 ms at 25 fps) and the tick itself. It does not include the
device's own input latency (``input_latency_ms``, PortAudio's estimate) nor what a sink adds
(encoding, the call app reading the virtual camera).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.live.session import Session
from runtime.local.mic import Chunk
from runtime.local.sinks import Sink
from runtime.provenance.disclosure import Badge

log = logging.getLogger("facecast.cam")

MIC_UTTERANCE = "mic"
"""Utterance id of the microphone stream in the session's speech queue."""
MAX_BACKLOG_SLICES = 2
"""Slices of microphone audio that may wait after a tick; beyond, the oldest is trimmed."""
SINK_QUEUE_FRAMES = 25
"""Frames buffered between the event loop and the sink thread (1 s at 25 fps)."""


@dataclass(frozen=True)
class CamOptions:
    """Settings of ``facecast cam``.

    Attributes:
        avatar: avatar name or bundle folder.
        device: microphone (``runtime.local.mic.select_device``: None, index, or name substring).
        vcam, preview: send frames to a virtual camera / an on-screen window.
        record: MP4 path to write video + audio to (None: no recording).
        seconds: stop after this many seconds (None: run until Ctrl-C or the window closes).
        size: renderer crop side (256 or 512). fps: frame rate (must divide 48000).
        backend, threads: renderer backend and ONNX Runtime threads.
        seed: behaviour seed. vcam_device: virtual camera device (e.g. /dev/video2).
        allow_unconsented: run an avatar whose bundle states no consent (logged); else such a
            bundle is refused (``avatars.bundle.require_consent``).
        badge: the disclosure badge in every frame (``runtime.provenance.disclosure.Badge``; None: off,
            logged).
        watermark: the invisible watermark in every frame (``runtime.provenance.watermark``;
            False: off, logged).
        c2pa_identity: who signs the ``record`` file's C2PA credentials
            (``runtime.provenance.c2pa.Identity``; None: ``resolve_identity()``).
    """

    avatar: str = "default"
    device: str | int | None = None
    vcam: bool = False
    preview: bool = False
    record: str | None = None
    seconds: float | None = None
    size: int = 256
    fps: int = 25
    backend: str = "auto"
    threads: int | None = None
    seed: int = 0
    vcam_device: str | None = None
    allow_unconsented: bool = False
    badge: Badge | None = field(default_factory=Badge)
    watermark: bool = True
    c2pa_identity: object | None = None


class MicFeed:
    """Microphone chunks in (event loop), one whole slice per tick out (scheduler's worker).

    Keeps the map from microphone samples to output frames that the latency figures need.

    Args:
        slice_samples: S, samples per output frame at 48 kHz.
    """

    def __init__(self, slice_samples: int) -> None:
        from runtime.audio.resample import RateFollower

        self.s = slice_samples
        self.resampler = RateFollower(OUTPUT_SAMPLE_RATE)
        self._lock = threading.Lock()  # push (event loop) against step (worker thread)
        self._pending: deque[np.ndarray] = deque()
        self._pending_n = 0
        self.in_pos = 0  # 48 kHz samples received so far (stream position)
        self.start_pos = 0  # stream position of the first pending sample
        self.chunks: deque[tuple[int, float]] = deque()  # (48 kHz end position, t_capture)
        self.underruns = 0
        self.trimmed = 0  # samples cut by the backlog limit
        self.fed_slices = 0
        self.started = False

    def push(self, chunk: Chunk) -> None:
        """One captured chunk (at the device's rate): resampled to 48 kHz and kept for the next
        ticks. Event loop (``chunks`` is read by ``CamSession.deliver``, also on the loop)."""
        y = self.resampler.push(chunk.samples, chunk.rate)
        with self._lock:
            if len(y):
                self._pending.append(y)
                self._pending_n += len(y)
                self.in_pos += len(y)
            self.chunks.append((self.in_pos, chunk.t_capture))
            self.started = True

    def _take(self, n: int) -> np.ndarray:
        out = np.empty(n, np.float32)
        pos = 0
        while pos < n:
            head = self._pending[0]
            k = min(n - pos, len(head))
            out[pos:pos + k] = head[:k]
            if k == len(head):
                self._pending.popleft()
            else:
                self._pending[0] = head[k:]
            pos += k
        self._pending_n -= n
        self.start_pos += n
        return out

    def step(self, queue_) -> tuple[int, int] | None:
        """Queue one slice on ``queue_`` (a ``SpeechQueue``) if a whole one is there. Returns the
        stream range [a, b) of 48 kHz microphone samples queued (None: nothing this tick).
        Worker thread."""
        with self._lock:
            if self._pending_n < self.s:
                if self.started:
                    self.underruns += 1
                return None
            a = self.start_pos
            piece = self._take(self.s)
            excess = self._pending_n - MAX_BACKLOG_SLICES * self.s
            if excess > 0:
                cut = self._pending_n - self.s
                self._take(cut)
                self.trimmed += cut
        queue_.add(MIC_UTTERANCE, piece)
        self.fed_slices += 1
        return a, a + self.s


class CamSession(Session):
    """A ``Session`` fed from a microphone whose frames go to sinks instead of WebRTC.

    Args:
        feed: the ``MicFeed`` (None: no input, the avatar idles).
        on_frame: called on the event loop as ``on_frame(index, video_frame | None,
            audio float32 [S] at 48 kHz, t_delivered)`` for every output frame.
        Other arguments: ``Session``'s (``drive=`` included, for a webcam driver).
    """

    def __init__(self, *args, feed: MicFeed | None = None,
                 on_frame: Callable | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.feed = feed
        self.on_frame = on_frame
        self.carries: dict[int, tuple[int, int]] = {}  # output frame → mic range it plays
        self.latencies: list[float] = []

    def advance(self, stages=None):
        """Feed one slice of microphone audio, then ``Session.advance(stages)``. Worker
        thread."""
        if self.feed is not None:
            tick = self.frame
            got = self.feed.step(self.queue)
            if got is not None:
                self.carries[tick + self.lookahead] = got
        return super().advance(stages)

    def deliver(self, job, video_frame, audio_frames: list) -> None:
        """``Session.deliver`` (tracks, events, counters), then latency and the sinks."""
        super().deliver(job, video_frame, audio_frames)
        now = time.monotonic()
        carried = self.carries.pop(job.index, None)
        if carried is not None and self.feed is not None:
            a, b = carried
            chunks = self.feed.chunks
            while chunks and chunks[0][0] <= b:
                end, t_capture = chunks.popleft()
                if end > a:  # its last sample is in this frame (otherwise it was trimmed)
                    self.latencies.append(now - t_capture)
        if self.on_frame is not None:
            self.on_frame(job.index, video_frame, job.audio, now)


class SinkThread:
    """Hands frames to the sinks in one thread, in order, through a bounded queue (the oldest
    frame is dropped when the sinks fall behind; ``dropped``). A sink that raises is reported
    in ``errors`` and written to no more (the caller closes it with ``abort``); the others go
    on."""

    def __init__(self, sinks: list[Sink], maxsize: int = SINK_QUEUE_FRAMES) -> None:
        self.sinks = list(sinks)
        self.errors: dict[str, str] = {}
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._main, name="facecast-sinks", daemon=True)
        self._thread.start()

    def put(self, index: int, frame, audio: np.ndarray, _t: float = 0.0) -> None:
        """Queue output frame ``index`` (an ``av.VideoFrame`` rgb24, or None: dropped) and its
        audio, float32 [S] at 48 kHz; never blocks (the oldest queued frame gives way)."""
        while True:
            try:
                self._queue.put_nowait((index, frame, audio))
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self.dropped += 1

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            index, frame, audio = item
            image = None if frame is None else frame.to_ndarray(format="rgb24")
            for sink in list(self.sinks):
                try:
                    sink.write(index, image, audio)
                except Exception as exc:
                    log.exception("sink %s failed", sink.name)
                    self.errors[sink.name] = f"{type(exc).__name__}: {exc}"
                    self.sinks.remove(sink)
            self.written += 1

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread (sinks are closed by the caller)."""
        self._queue.put(None)
        self._thread.join(timeout)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


@dataclass
class CamResult:
    """What a ``facecast cam`` run did; ``to_json()`` is what ``--json`` prints.

    Times are milliseconds unless named otherwise; ``latency_ms`` is defined in the module
    docstring (per 20 ms microphone chunk: median, p95, max, n)."""

    device: dict
    mic_rate: int
    seconds: float
    fps: float
    frames: int
    frames_rendered: int
    frames_dropped: int
    late_ticks: int
    latency: list[float] = field(repr=False, default_factory=list)
    mic: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    stopped_by: str = "seconds"
    errors: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        lat = self.latency
        return {
            "device": self.device, "mic_rate": self.mic_rate,
            "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "frames": self.frames, "frames_rendered": self.frames_rendered,
            "frames_dropped": self.frames_dropped, "late_ticks": self.late_ticks,
            "latency_ms": {"median": _percentile(lat, 50), "p95": _percentile(lat, 95),
                           "max": _percentile(lat, 100), "n": len(lat)},
            "mic": self.mic, "outputs": self.outputs, "stopped_by": self.stopped_by,
            "errors": self.errors,
        }

    def summary(self) -> str:
        j = self.to_json()
        lat = j["latency_ms"]
        return (f"{j['seconds']:.1f} s, {j['frames_rendered']} frames ({j['fps']:.1f} fps, "
                f"{j['frames_dropped']} dropped), mic→frame latency median {lat['median']} ms, "
                f"p95 {lat['p95']} ms; mic chunks dropped {self.mic.get('dropped', 0)}, "
                f"underruns {self.mic.get('underruns', 0)}")


def _record_credentials(options: CamOptions, avatar):
    """The ``--record`` file's C2PA signing callback for ``avatar`` (``runtime.provenance.c2pa``).
    """
    from runtime.provenance.c2pa import Provenance, mp4_signer

    speech = f"microphone:{options.device if options.device is not None else 'default'}"
    return mp4_signer(Provenance(avatar.name, avatar.metadata, speech, options.badge is not None,
                                 options.watermark), options.c2pa_identity)


def _open_sinks(options: CamOptions, avatar, width: int, height: int, title: str
                ) -> list[Sink]:
    from runtime.local.sinks import PreviewWindow, Recorder, VirtualCamera

    sinks: list[Sink] = []
    try:
        if options.record:
            sinks.append(Recorder(options.record, width, height, options.fps,
                                  credentials=_record_credentials(options, avatar)))
        if options.vcam:
            sinks.append(VirtualCamera(width, height, options.fps, device=options.vcam_device))
        if options.preview:
            sinks.append(PreviewWindow(title))
    except BaseException:
        _close_sinks(sinks, abort=True)
        raise
    return sinks


def _close_sinks(sinks: list[Sink], abort: bool = False) -> dict[str, str]:
    errors = {}
    for sink in sinks:
        try:
            log.info("%s: %s", sink.name, sink.close(abort=abort))
        except Exception as exc:  # noqa: BLE001 - report, close the others
            errors[sink.name] = str(exc)
    return errors


def run_cam(options: CamOptions, stop: threading.Event | None = None,
            drive: Callable | None = None, on_started: Callable[[dict], None] | None = None
            ) -> CamResult:
    """Run ``facecast cam`` until ``options.seconds`` pass, ``stop`` is set, Ctrl-C, the preview
    window closes, or the microphone stops.

    Args:
        options: see ``CamOptions``; at least one of vcam, preview, record is required.
        stop: an event another thread may set to end the run; set by ``run_cam`` itself when
            the run ends for another reason (so whoever waits on it is released).
        drive: optional per-frame ``drive(coeffs, pose) -> (coeffs, pose)`` handed to the
            session (a webcam driver).
        on_started: called with the device and outputs once capture runs.

    Returns the ``CamResult``. Raises ValueError (bad options, unknown avatar),
    ``runtime.local.mic.MicError`` (device missing, no input, busy) or
    ``runtime.local.sinks.SinkUnavailable`` (no virtual camera, no display, unwritable output) before
    anything heavy is loaded, where possible.
    """
    import avatars
    from runtime.local.mic import find_device

    if not (options.vcam or options.preview or options.record):
        raise ValueError("choose at least one output: --vcam, --preview or --record OUT.mp4")
    if OUTPUT_SAMPLE_RATE % options.fps:
        raise ValueError(f"--fps must divide {OUTPUT_SAMPLE_RATE} (24, 25, 30, 50, 60 …)")
    if options.seconds is not None and not (options.seconds > 0 and math.isfinite(options.seconds)):
        raise ValueError("--seconds must be a positive number")

    avatar = avatars.load(options.avatar)  # a bundle, not models: cheap, and refused first
    if not avatars.bundle.require_consent(avatar, options.allow_unconsented):
        log.warning("avatar %r states no consent; running it because "
                    "--allow-unconsented-avatar was given", avatar.name)
    device = find_device(options.device)  # fail on a bad device before loading models
    height, width = (s // 2 * 2 for s in avatar.image.shape[:2])
    sinks = _open_sinks(options, avatar, width, height, f"facecast — {avatar.name}")
    try:
        return asyncio.run(_run(options, avatar, device, sinks, stop or threading.Event(),
                                drive, on_started))
    except BaseException:
        _close_sinks(sinks, abort=True)
        raise


async def _run(options: CamOptions, avatar, device, sinks: list[Sink], stop: threading.Event,
               drive, on_started) -> CamResult:
    from engines.motion import MotionEngine
    from engines.renderer import NeuralRenderer
    from runtime.live.scheduler import AvatarState, Scheduler
    from runtime.local.mic import Microphone

    loop = asyncio.get_running_loop()
    renderer = await loop.run_in_executor(
        None, lambda: NeuralRenderer(options.size, options.backend, threads=options.threads))
    if options.badge is None:
        log.warning("the AI-generated disclosure badge is off (--no-badge)")
    if not options.watermark:
        log.warning("the invisible watermark is off (--no-watermark)")
    state = await loop.run_in_executor(None, AvatarState.build, avatar.name, avatar, renderer,
                                       options.badge, options.watermark)
    motion = await loop.run_in_executor(None, MotionEngine)
    scheduler = Scheduler(renderer, options.fps)
    # the run ends on the first of: --seconds, Ctrl-C, ``stop``, the window closed, the mic gone
    finished: asyncio.Future[str] = loop.create_future()

    def finish(reason: str) -> None:
        if not finished.done():
            finished.set_result(reason)

    def finish_from_thread(reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run is over anyway
            loop.call_soon_threadsafe(finish, reason)

    mic = Microphone(device.index).start(loop)
    sink_thread = SinkThread(sinks)
    feed = MicFeed(OUTPUT_SAMPLE_RATE // options.fps)
    extra = {} if drive is None else {"drive": drive}  # Session(drive=) of the webcam mode
    session = CamSession("cam", state, motion, options.fps, seed=options.seed, feed=feed,
                         on_frame=sink_thread.put, **extra)
    outputs = {s.name: s.target for s in sinks}
    if on_started is not None:
        on_started({"device": mic.device.to_json(), "rate": mic.rate, "outputs": outputs})

    async def pump() -> None:  # chunks arrive as PortAudio hands them over
        while (chunk := await mic.get()) is not None:
            feed.push(chunk)
        finish("microphone stopped")

    for s in sinks:
        s.watch(finish_from_thread)
    watcher = threading.Thread(target=lambda: (stop.wait(), finish_from_thread("stop")),
                               name="facecast-cam-stop", daemon=True)
    watcher.start()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, finish, "stop")
    timer = (loop.call_later(options.seconds, finish, "seconds")
             if options.seconds is not None else None)
    pumping = loop.create_task(pump(), name="facecast-cam-mic")
    scheduler.add(session)
    scheduler.start()
    t0 = time.monotonic()
    try:
        stopped_by = await finished
    finally:
        wall = time.monotonic() - t0
        if timer is not None:
            timer.cancel()
        scheduler.remove(session)
        await scheduler.stop()  # waits for the tick thread's last tick
        mic.close()
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        stop.set()  # releases the watcher
        session.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        await loop.run_in_executor(None, sink_thread.close)
        await loop.run_in_executor(None, watcher.join)
    errors = dict(sink_thread.errors)
    errors.update(_close_sinks([s for s in sinks if s.name not in errors]))
    # a failed sink still has to let go of its device or file
    _close_sinks([s for s in sinks if s.name in sink_thread.errors], abort=True)
    if stopped_by == "microphone stopped":
        errors["mic"] = f"the microphone {mic.device.name!r} stopped delivering audio"
    frames = session.frames_rendered + session.frames_dropped
    return CamResult(
        device=mic.device.to_json(), mic_rate=mic.rate, seconds=wall,
        fps=session.frames_rendered / wall if wall > 0 else 0.0, frames=frames,
        frames_rendered=session.frames_rendered, frames_dropped=session.frames_dropped,
        late_ticks=scheduler.late_ticks, latency=session.latencies,
        mic={"chunks": mic.captured, "dropped": mic.dropped, "overflows": mic.overflows,
             "underruns": feed.underruns, "trimmed_ms": round(feed.trimmed / 48.0, 1),
             "input_latency_ms": round(mic.input_latency_s * 1000, 1),
             "slices_fed": feed.fed_slices},
        outputs={**outputs, **({"record_frames": next(
            (s.frames for s in sinks if s.name == "record"), 0)} if options.record else {}),
            "sink_frames_dropped": sink_thread.dropped},
        stopped_by=stopped_by, errors=errors)


def describe_outputs(info: dict) -> str:
    """One line for the terminal: where the frames go."""
    d = info["device"]
    outs = ", ".join(f"{k} {v}" if v else k for k, v in info["outputs"].items())
    return (f"facecast cam: microphone {d['index']} {d['name']!r} at {info['rate']} Hz → {outs}; "
            "Ctrl-C stops")

