"""The adapter every agent integration shares: speech audio in, paired video + audio frames out.

``facecast serve`` streams a ``runtime.live.session.Session`` over WebRTC; an agent framework
(Pipecat, LiveKit Agents) wants the same frames as plain arrays to send through its own
transport. This module gives it exactly that pipeline, not a copy of it:

* ``AvatarEngine`` — one per process: the renderer, the motion model and one
  ``runtime.live.scheduler.Scheduler`` (one frame clock, one batched renderer call per tick for
  every stream, the watchdog), built as ``facecast serve`` builds them.
* ``AvatarStream`` — one per conversation: a ``Session`` whose frames go to a bounded queue
  (``Session.sink``) instead of aiortc tracks. ``push_audio`` / ``end_segment`` queue speech,
  ``interrupt`` cuts it, ``frames()`` yields ``PairedFrame`` s in real time.

**One clock** (``DESIGN.md``). ``PairedFrame`` t carries the composited image of video frame t
and exactly the output audio it plays: samples [clock.frame_start(t), clock.frame_start(t + 1))
at 48 kHz (1920 at 25 fps), so a consumer that sends each image with its audio keeps them in sync
however long the stream runs. Video pts = t in time base 1/fps; ``audio_pts`` in samples. The mouth
of a sample shows ``Session.lookahead`` frames (80 ms at 25 fps) after it was queued, plus one
tick; a silent stream still yields frames (blinks, breathing, small head motion) with silent
audio. When the machine misses a tick's video the previous image repeats (``images_repeated``),
so every index has an image and audio is never late for video.

**Back-pressure.** The scheduler never waits for a consumer (it drives every stream of the
process). Each stream buffers at most ``max_queued_frames`` frames not yet taken; beyond that
the oldest frame is dropped whole, image and audio (``frames_dropped``; its speech events move to
the next frame). A consumer that reads at the frame rate never loses one. Speech input is
bounded by ``max_buffer_s`` of queued audio (``BufferFull``) and ``MAX_UTTERANCES`` segments.

**Interruption and playback position.** ``interrupt()`` empties the speech queue, the motion
model's delay line and mouth rows, and the frames queued but not yet yielded, and drops the
frame being rendered at that moment; the next frame yielded (at most one tick later) carries
silence, the mouth closing, and ``StateChanged("idle")``. Playback positions count what the
consumer was *given*: ``SpeechEnded.played_ms`` and ``played_seconds()`` are the samples of the
segment in frames already yielded, not those rendered or queued.

**Safe by default**, as ``facecast serve``: every frame carries the disclosure badge
(``runtime.provenance.disclosure``) unless ``badge=None`` and the invisible watermark
(``runtime.provenance.watermark``) unless ``watermark=False`` (each logged when off), and an
avatar whose bundle states no consent is refused (``avatars.bundle.ConsentMissing``) unless
``allow_unconsented=True`` (logged).

Everything here runs on one asyncio event loop (the engine's); the rendering runs in the
scheduler's worker thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Self

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.audio.resample import RateFollower
from runtime.clock import as_fps
from runtime.live.events import SessionEvent, SpeechEnded, SpeechStarted, StateChanged
from runtime.live.monotonic import MonotonicClock
from runtime.live.speech import BufferFull, TooManyQueued
from runtime.provenance.disclosure import Badge

__all__ = ["MAX_QUEUED_FRAMES", "AvatarEngine", "AvatarStream", "BufferFull", "PairedFrame",
           "TooManyQueued"]

log = logging.getLogger("facecast.integrations")

MAX_QUEUED_FRAMES = 5
"""Default frames a stream holds for a consumer that has not taken them (200 ms at 25 fps);
the oldest is dropped beyond."""
MAX_AVATARS = 8
"""Prepared avatars (per name, badge and watermark) an engine keeps for new streams; least
recent dropped."""
PCM_SCALE = 32767.0
"""int16 full scale used both ways: output as ``runtime.live.tracks`` encodes it (x · 32767,
rounded), int16 input divided by the same, so 48 kHz int16 audio comes out bit for bit."""
_RESAMPLER_SLACK = 64
"""Samples beyond the nominal ratio a resampled chunk may come out longer (the ~1 ms the
streaming resampler released from earlier chunks), reserved when checking the buffer's room."""
_INTERRUPTED_IDS_KEPT = 64
"""Segment ids ``interrupt`` ended that later pushes are ignored for (most recent kept)."""


@dataclass(frozen=True)
class PairedFrame:
    """One output frame: an image and exactly the audio it plays.

    Attributes:
        index: output frame index t; the video pts is t in time base 1 / fps.
        image: uint8 [H, W, 3] RGB composited frame (badge and watermark included); after a
            dropped tick the previous image again, so every index has one. Read-only to the
            consumer.
        audio: int16 [n] mono at ``sample_rate``: samples [clock.frame_start(t),
            clock.frame_start(t + 1)) of the output, n = 1920 at 25 fps (1601 or 1602 at
            30000/1001 fps); zeros while silent.
        sample_rate: Hz, ``engines.audio.OUTPUT_SAMPLE_RATE`` (48000).
        audio_pts: clock.frame_start(t), samples.
        speaking: True while the frame plays speech (or a segment is still open).
        events: the ``runtime.live.events`` this frame delivers, in order: ``SpeechStarted``
            with a segment's first sample, ``SpeechEnded`` (``interrupted=False``,
            ``played_ms`` = what was yielded) with its last, ``StateChanged`` when the avatar
            goes from idle to speaking or back.
    """

    index: int
    image: np.ndarray
    audio: np.ndarray
    sample_rate: int
    audio_pts: int
    speaking: bool
    events: tuple[SessionEvent, ...] = ()


@dataclass
class _Pending:
    """A delivered frame not yet yielded (mutable: a dropped frame's events move into it)."""

    index: int
    image: np.ndarray
    audio: np.ndarray  # int16 [n]
    speaking: bool
    state: str  # the session's state after this frame
    events: list[SessionEvent]  # SpeechStarted / SpeechEnded only
    played: tuple[tuple[str, int], ...]  # (segment id, samples of it in this frame)


@dataclass
class _Segment:
    """Bookkeeping of one segment until the consumer got its ``SpeechEnded``: 48 kHz samples
    queued and yielded, whether ``end_segment`` was called, its input resampler."""

    pushed: int = 0
    yielded: int = 0
    done: bool = False
    resampler: RateFollower | None = field(
        default_factory=lambda: RateFollower(OUTPUT_SAMPLE_RATE))


def _ms(samples: int) -> int:
    """Whole milliseconds of ``samples`` at the output rate."""
    return round(samples / OUTPUT_SAMPLE_RATE * 1000)


def _mono_float(samples: np.ndarray) -> np.ndarray:
    """float32 [n] of mono int16 (÷ ``PCM_SCALE``) or float [n] audio. Raises ValueError for
    another shape or dtype."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono, shape [n], got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype(np.float32) / np.float32(PCM_SCALE)
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    raise ValueError(f"audio must be int16 or float32, got {x.dtype}")


def _pcm16(x: np.ndarray) -> np.ndarray:
    """float32 [n] in [-1, 1] → int16 [n], as ``runtime.live.tracks.audio_frames`` encodes."""
    return np.clip(np.round(x * PCM_SCALE), -32768, 32767).astype(np.int16)


def _check_rate(rate: int) -> int:
    """A sample rate as int; ValueError unless a positive whole number of Hz (8 kHz – 384 kHz)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) \
            or not 8000 <= rate <= 384000:
        raise ValueError(f"sample_rate must be a whole number of Hz in 8000–384000, got "
                         f"{rate!r}")
    return int(rate)


def _rest_image(compositor) -> np.ndarray:
    """The avatar's frame at rest as its compositor makes frames (badge drawn, watermark
    added): what a stream shows if its very first tick has no video."""
    image = compositor.image
    return image if compositor.watermark is None else compositor.watermark.apply(image)


def _as_badge(badge: Badge | bool | None) -> Badge | None:
    """``True`` → the default ``Badge()``; a ``Badge`` → itself; ``None`` / ``False`` → None.
    Raises TypeError for anything else."""
    if badge is True:
        return Badge()
    if badge is None or badge is False:
        return None
    if not isinstance(badge, Badge):
        raise TypeError(f"badge must be True, a Badge or None, got {badge!r}")
    return badge


class AvatarStream:
    """One avatar's live stream: speech in, ``PairedFrame`` s out (see the module docstring).

    Made by ``AvatarEngine.open_stream``; not constructed directly. Methods other than
    ``frames()`` / ``aclose()`` are synchronous and must be called on the engine's event loop.
    One consumer iterates ``frames()`` (or ``async for frame in stream``) at a time.

    Attributes:
        id: the session id (logs). fps: frame rate (``Fraction``). sample_rate: 48000.
        size: (width, height) of the images, pixels. lookahead: frames between a sample being
            queued and its mouth showing (the motion model's K).
        frames_dropped: frames dropped whole because the consumer lagged.
        images_repeated: frames whose image repeats the previous one (a tick whose video the
            scheduler dropped: the machine was late).
        session: the underlying ``runtime.live.session.Session`` (its queue, clock, counters).
    """

    def __init__(self, engine: AvatarEngine, session_id: str, state, *, seed: int,
                 max_buffer_s: float, max_queued_frames: int) -> None:
        from runtime.live.session import Session

        if max_queued_frames < 1:
            raise ValueError(f"max_queued_frames must be at least 1, got {max_queued_frames}")
        self._engine = engine
        self.max_queued_frames = int(max_queued_frames)
        self._queue: deque[_Pending] = deque()
        self._ready = asyncio.Event()
        self._events: list[SessionEvent] = []
        self._segments: dict[str, _Segment] = {}
        self._interrupted_ids: deque[str] = deque(maxlen=_INTERRUPTED_IDS_KEPT)
        self._cut = 0  # frames advanced before the last interrupt are not yielded
        self._last_image = _rest_image(state.compositor)
        self._state_yielded = "idle"
        self._current: str | None = None
        self._current_played = 0
        self.frames_dropped = 0
        self.images_repeated = 0
        self.closed = False
        self.session = Session(session_id, state, engine.motion, engine.fps, seed=seed,
                               max_buffer_s=max_buffer_s, on_event=self._on_event,
                               sink=self._on_frame)
        self.id = session_id
        self.fps: Fraction = self.session.fps
        self.sample_rate = OUTPUT_SAMPLE_RATE
        self.lookahead = self.session.lookahead
        h, w = state.compositor.image.shape[:2]
        self.size = (w, h)

    # --- speech in ------------------------------------------------------------------------
    def push_audio(self, samples: np.ndarray, sample_rate: int, segment_id: str) -> None:
        """Queue speech for segment ``segment_id`` (opened by its first push).

        Args:
            samples: mono int16 [n] (full scale 32767) or float32 [n] in [-1, 1], any length.
            sample_rate: their rate, Hz (any; resampled to 48 kHz by ``runtime.audio.resample``,
                one stream per segment, so chunk boundaries leave no seams).
            segment_id: the segment (utterance) the audio belongs to; a push to a segment that
                ``interrupt`` ended is ignored (it was cut).

        Raises ValueError for a bad shape, dtype or rate, or a push to a segment already ended
        with ``end_segment`` whose end has not played yet; ``BufferFull`` (a ValueError) when the
        speech buffer (``max_buffer_s``) has no room for it (nothing is queued then: retry
        later); ``TooManyQueued`` (a ValueError) for a new segment beyond ``MAX_UTTERANCES``;
        RuntimeError once the stream is closed.
        """
        if self.closed:
            raise RuntimeError("the stream is closed")
        x = _mono_float(samples)
        rate = _check_rate(sample_rate)
        if segment_id in self._interrupted_ids:
            return
        seg = self._segments.get(segment_id)
        if seg is not None and seg.done:
            raise ValueError(f"segment {segment_id!r} was ended; give new audio a new id")
        queue = self.session.queue
        need = math.ceil(len(x) * OUTPUT_SAMPLE_RATE / rate) + _RESAMPLER_SLACK
        if need > queue.room_samples:
            raise BufferFull(f"more than {queue.max_samples / OUTPUT_SAMPLE_RATE:.0f} s of "
                             "speech buffered")
        if seg is None:
            if len(queue) >= queue.max_utterances:
                raise TooManyQueued(f"{len(queue)} segments are queued (the limit)")
            seg = self._segments[segment_id] = _Segment()
        y = seg.resampler.push(x, rate)
        queue.add(segment_id, y)
        seg.pushed += len(y)

    def end_segment(self, segment_id: str) -> None:
        """No more audio for ``segment_id``: what its resampler still holds is queued, and its
        ``SpeechEnded`` comes with the frame that plays its last sample. A segment that was
        never pushed, already ended or interrupted: nothing happens."""
        seg = self._segments.get(segment_id)
        if seg is None or seg.done or self.closed:
            return
        tail = seg.resampler.flush()
        seg.done, seg.resampler = True, None
        try:
            self.session.queue.add(segment_id, tail, done=True)
            seg.pushed += len(tail)
        except BufferFull:  # no room for the last ~1 ms: end without it
            self.session.queue.add(segment_id, tail[:0], done=True)

    def interrupt(self) -> list[SpeechEnded]:
        """Barge-in: drop all queued speech, the motion rows computed for it and the frames
        not yet yielded; the avatar returns to idle with the next frame (one tick at most).

        Returns a ``SpeechEnded(interrupted=True)`` for every segment whose end the consumer
        had not been given, in the order they were opened, with ``played_ms`` = what of it was
        yielded and ``duration_ms`` = what was queued. These do not appear in later frames.
        """
        if self.closed:
            return []
        self.session.interrupt()
        self._cut = self.session.frame
        self._queue.clear()
        self._events.clear()
        ended = [SpeechEnded(sid, _ms(seg.yielded), _ms(seg.pushed), interrupted=True)
                 for sid, seg in self._segments.items()]
        self._interrupted_ids.extend(self._segments)
        self._segments.clear()
        return ended

    def played_seconds(self) -> float:
        """Seconds of the current (or last) segment's audio in frames already yielded: the
        playback position a consumer reports. 0.0 before any speech."""
        return self._current_played / OUTPUT_SAMPLE_RATE

    @property
    def pending_segments(self) -> int:
        """Segments pushed whose ``SpeechEnded`` the consumer has not been given yet."""
        return len(self._segments)

    # --- frames out -----------------------------------------------------------------------
    def _on_event(self, event: SessionEvent) -> None:
        """``Session.on_event``: speech events wait for their frame; the state is taken per
        frame instead (``_Pending.state``), so that dropped frames cannot lose a change."""
        if not isinstance(event, StateChanged):
            self._events.append(event)

    def _on_frame(self, job, image: np.ndarray | None) -> None:
        """``Session.sink``: queue one delivered frame for the consumer (event loop)."""
        events, self._events = self._events, []
        if self.closed or job.index < self._cut:  # advanced before an interrupt: cut
            return
        if image is None:
            self.images_repeated += 1
            image = self._last_image
        self._last_image = image
        self._queue.append(_Pending(job.index, image, _pcm16(job.audio), job.speaking,
                                    self.session.state, events, job.played))
        if len(self._queue) > self.max_queued_frames:
            old = self._queue.popleft()
            self._queue[0].events[:0] = old.events
            self.frames_dropped += 1
            if self.frames_dropped in (1, 10, 100) or self.frames_dropped % 1000 == 0:
                log.warning("stream %s: consumer lags, %d frame(s) dropped", self.id,
                            self.frames_dropped)
        self._ready.set()

    def _take(self) -> PairedFrame:
        """The oldest queued frame as a ``PairedFrame``; playback counters move on."""
        p = self._queue.popleft()
        for sid, n in p.played:
            seg = self._segments.get(sid)
            if seg is not None:
                seg.yielded += n
            if n > 0:
                if sid != self._current:
                    self._current, self._current_played = sid, 0
                self._current_played += n
        events: list[SessionEvent] = []
        for ev in p.events:
            seg = self._segments.get(ev.id)
            if seg is None:  # a segment interrupt() already reported
                continue
            if isinstance(ev, SpeechEnded):
                ev = replace(ev, played_ms=_ms(seg.yielded))
                del self._segments[ev.id]
            elif isinstance(ev, SpeechStarted) and ev.id != self._current:
                self._current, self._current_played = ev.id, 0
            events.append(ev)
        if p.state != self._state_yielded:
            self._state_yielded = p.state
            events.append(StateChanged(p.state))
        clock = self.session.clock
        return PairedFrame(p.index, p.image, p.audio, OUTPUT_SAMPLE_RATE,
                           clock.frame_start(p.index), p.speaking, tuple(events))

    async def frames(self) -> AsyncIterator[PairedFrame]:
        """Yield every frame in order as the scheduler produces it (``fps`` per second, real
        time); ends when the stream is closed."""
        while True:
            while not self._queue:
                if self.closed:
                    return
                self._ready.clear()
                await self._ready.wait()
            yield self._take()

    def __aiter__(self) -> AsyncIterator[PairedFrame]:
        return self.frames()

    async def aclose(self) -> None:
        """Stop the stream: the scheduler forgets it, queued speech and frames are dropped, a
        running ``frames()`` ends. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._engine._forget(self)
        self._queue.clear()
        self._segments.clear()
        self._ready.set()


class AvatarEngine:
    """The process's avatar pipeline, shared by every stream: renderer, motion model,
    scheduler. ``await AvatarEngine.start(...)``, then ``open_stream``; ``aclose`` at the end
    (or ``async with``).

    Attributes:
        renderer: the ``engines.renderer.NeuralRenderer``. motion: the ``MotionEngine``.
        scheduler: the ``runtime.live.scheduler.Scheduler``. fps: frame rate (``Fraction``).
        size: renderer crop side R, pixels.
        capacity: sessions this machine holds at this backend, size and fps, as
            ``facecast bench capacity`` measured and stored it (``runtime.bench.capacity``);
            None when nothing is stored (``facecast bench capacity`` stores it).
    """

    def __init__(self, renderer, motion, scheduler, *, size: int, capacity: int | None = None,
                 max_avatars: int = MAX_AVATARS) -> None:
        self.renderer = renderer
        self.motion = motion
        self.scheduler = scheduler
        self.fps: Fraction = scheduler.fps
        self.size = size
        self.capacity = capacity
        self.max_avatars = max_avatars
        self._states: OrderedDict[tuple[str, Badge | None, bool], object] = OrderedDict()
        self._streams: set[AvatarStream] = set()
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self.closed = False

    @classmethod
    async def start(cls, size: int = 256, fps: int | str | Fraction = 25, backend: str = "auto",
                    *, threads: int | None = None,
                    clock: MonotonicClock | None = None) -> AvatarEngine:
        """Load the renderer (``size`` 256 or 512, ``backend`` as ``facecast serve --backend``,
        ``threads`` ONNX Runtime threads) and the motion model, warm Praat up, start the frame
        clock at ``fps`` (exact: 25, "30000/1001"). Slow parts run in executor threads.
        ``clock``: what the scheduler paces itself by (default the system's monotonic clock;
        tests pass a ``runtime.live.monotonic.VirtualClock``). Raises ValueError for a bad
        size, fps or backend, and what the backend raises when it cannot run here."""
        from engines.motion import MotionEngine
        from engines.renderer import NeuralRenderer
        from runtime.audio.prosody import warm_up
        from runtime.live.scheduler import Scheduler

        rate = as_fps(fps)
        loop = asyncio.get_running_loop()
        renderer = await loop.run_in_executor(
            None, lambda: NeuralRenderer(size, backend, threads=threads))
        motion = await loop.run_in_executor(None, MotionEngine)
        await loop.run_in_executor(None, warm_up)
        capacity = await loop.run_in_executor(None, stored_capacity, renderer.backend, size,
                                              rate)
        engine = cls(renderer, motion, Scheduler(renderer, rate, clock=clock), size=size,
                     capacity=capacity)
        engine.scheduler.start()
        return engine

    async def open_stream(self, avatar: str = "default", *, seed: int = 0,
                          badge: Badge | bool | None = True, watermark: bool = True,
                          allow_unconsented: bool = False, max_buffer_s: float = 60.0,
                          max_queued_frames: int = MAX_QUEUED_FRAMES) -> AvatarStream:
        """A new stream of ``avatar`` (a bundle name or folder, ``avatars.load``), driven from
        the next tick on.

        Args:
            seed: behaviour seed (blinks, idle motion). badge: the disclosure badge (True: the
                default ``Badge()``; None: none, logged). watermark: the invisible mark (False:
                none, logged). allow_unconsented: run a bundle that states no consent (logged).
                max_buffer_s: speech audio queued at most, seconds. max_queued_frames: frames
                held for a lagging consumer.

        Raises ``avatars.bundle.ConsentMissing`` for a bundle without consent (unless
        allowed), ``BundleError`` / OSError when it does not load, ValueError for bad
        arguments (TypeError for a bad ``badge``), RuntimeError after ``aclose``.
        """
        if self.closed:
            raise RuntimeError("the engine is closed")
        mark = _as_badge(badge)
        state = await self._avatar_state(avatar, mark, watermark, allow_unconsented)
        sid = f"stream{next(self._ids)}"
        if mark is None:
            log.warning("stream %s: the AI-generated disclosure badge is off", sid)
        if not watermark:
            log.warning("stream %s: the invisible watermark is off", sid)
        stream = AvatarStream(self, sid, state, seed=seed, max_buffer_s=max_buffer_s,
                              max_queued_frames=max_queued_frames)
        self.scheduler.add(stream.session)
        self._streams.add(stream)
        log.info("stream %s opened (avatar %s)", sid, state.name)
        return stream

    async def prepare(self, avatar: str = "default", *, badge: Badge | bool | None = True,
                      watermark: bool = True, allow_unconsented: bool = False
                      ) -> tuple[int, int]:
        """Load and prepare ``avatar`` with ``badge`` and ``watermark`` now, so that a later
        ``open_stream`` of it is quick (a pipeline's set-up, before its first frame). Returns
        (width, height) of its frames, pixels. Raises as ``open_stream``."""
        state = await self._avatar_state(avatar, _as_badge(badge), watermark,
                                         allow_unconsented)
        h, w = state.compositor.image.shape[:2]
        return w, h

    async def _avatar_state(self, name: str, badge: Badge | None, watermark: bool,
                            allow_unconsented: bool):
        """The prepared ``AvatarState`` of ``name`` with ``badge`` and ``watermark`` (kept,
        least recent dropped beyond ``max_avatars``); consent is checked on every call."""
        import avatars
        from avatars.bundle import require_consent
        from runtime.live.scheduler import AvatarState

        async with self._lock:
            key = (str(name), badge, bool(watermark))
            state = self._states.get(key)
            loop = asyncio.get_running_loop()
            if state is None:
                bundle = await loop.run_in_executor(None, avatars.load, name)
                require_consent(bundle, allow_unconsented)
                state = await loop.run_in_executor(None, AvatarState.build, bundle.name, bundle,
                                                   self.renderer, badge, bool(watermark))
                self._states[key] = state
            if not require_consent(state.avatar, allow_unconsented):
                log.warning("avatar %r states no consent; running it because "
                            "allow_unconsented=True", state.name)
            self._states.move_to_end(key)
            while len(self._states) > self.max_avatars:
                self._states.popitem(last=False)
            return state

    @property
    def sessions(self) -> int:
        """Streams open now."""
        return len(self._streams)

    @property
    def load(self) -> float | None:
        """``sessions / capacity`` (1.0: full), None when no capacity is stored."""
        return None if self.capacity is None else self.sessions / max(1, self.capacity)

    def _forget(self, stream: AvatarStream) -> None:
        """``AvatarStream.aclose``: stop driving its session."""
        stream.session.close()
        self.scheduler.remove(stream.session)
        self._streams.discard(stream)

    async def aclose(self) -> None:
        """Close every stream and stop the scheduler (waits for a tick in progress)."""
        if self.closed:
            return
        self.closed = True
        for stream in list(self._streams):
            await stream.aclose()
        await self.scheduler.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def stored_capacity(backend: str, size: int, fps: int | str | Fraction) -> int | None:
    """The session capacity ``facecast bench capacity`` stored for this machine, resolved
    ``backend`` (``NeuralRenderer.backend``), ``size`` and ``fps`` (``runtime.bench.capacity``),
    or None when none is stored or it cannot be read."""
    from runtime.bench.capacity import load_capacity, machine_key

    try:
        report = load_capacity(machine_key(backend, size, fps))
    except (OSError, ValueError) as exc:
        log.warning("no stored capacity: %s", exc)
        return None
    return None if report is None else int(report["capacity"])
