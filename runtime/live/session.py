"""One live session: queued speech in, lip-synced video frames and audio slices out, one clock.

A session owns its speech queue, streaming motion state, behaviour state and its two outgoing
aiortc tracks. It does not pace itself: the process's ``runtime.live.scheduler.Scheduler`` calls
``advance()`` once per video frame for every session (in a worker thread, never on the event
loop), renders all due sessions in one batch, and hands each result to ``deliver()`` on the loop.

Timing (``DESIGN.md``, "One clock"): output frame t carries audio samples [t·S, (t+1)·S) of the
session's output, S = 48000 / fps, and both tracks stamp their frames with pts from that sample
counter (time base 1/48000). The motion model needs ``lookahead_frames`` K of future audio, so
speech taken from the queue at tick t is played at tick t + K (a K-slice delay line); the mouth
row for that slice is ready by then. Latency this adds: K frames (80 ms at 25 fps).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from engines.audio import HOP_SECONDS, OUTPUT_SAMPLE_RATE, SAMPLE_RATE, WINDOW_SECONDS
from engines.visemes import MOTION_COEFFICIENTS

AUDIO_FRAME_SAMPLES = 960
"""Samples per outgoing audio frame: 20 ms at 48 kHz (one Opus packet)."""
VIDEO_QUEUE_FRAMES = 3
"""Outgoing video frames buffered per session (120 ms at 25 fps); the oldest is dropped beyond."""
AUDIO_QUEUE_FRAMES = 6
"""Outgoing 20 ms audio frames buffered per session (120 ms)."""
_K = len(MOTION_COEFFICIENTS)


class BufferFull(ValueError):
    """More speech audio queued than the session's limit."""


@dataclass
class Utterance:
    """Speech queued for playing: float32 chunks at 48 kHz, in order.

    ``total`` samples queued so far; ``taken`` taken from the queue; ``played`` output so far;
    ``done`` when no more chunks will come (``audio_end``, or a TTS utterance); ``started`` /
    ``ended`` once its ``speech_started`` / ``speech_ended`` event has been sent.
    """

    id: str
    chunks: deque = field(default_factory=deque)
    total: int = 0
    taken: int = 0
    played: int = 0
    done: bool = False
    started: bool = False
    ended: bool = False
    created: float = field(default_factory=time.monotonic)
    first_audio: float | None = None

    @property
    def duration_ms(self) -> float:
        return self.total / OUTPUT_SAMPLE_RATE * 1000


class SpeechQueue:
    """Thread-safe queue of utterances at 48 kHz; ``pull(n)`` always returns n samples (silence
    where nothing is queued) and says which utterances they came from.

    Args:
        max_seconds: most audio buffered (not yet taken) across utterances; ``add`` raises
            ``BufferFull`` beyond it.
    """

    def __init__(self, max_seconds: float = 60.0) -> None:
        self.max_samples = int(max_seconds * OUTPUT_SAMPLE_RATE)
        self._lock = threading.Lock()
        self._items: deque[Utterance] = deque()
        self._by_id: dict[str, Utterance] = {}

    @property
    def buffered(self) -> int:
        """Samples queued and not yet taken."""
        with self._lock:
            return sum(u.total - u.taken for u in self._items)

    def add(self, utt_id: str, samples: np.ndarray, done: bool = False) -> Utterance:
        """Append float32 [n] 48 kHz samples to utterance ``utt_id`` (created if new, or if the
        one of that id is already done). Raises BufferFull if the limit would be passed."""
        x = np.asarray(samples, dtype=np.float32)
        with self._lock:
            queued = sum(u.total - u.taken for u in self._items)
            if queued + len(x) > self.max_samples:
                raise BufferFull(f"more than {self.max_samples / OUTPUT_SAMPLE_RATE:.0f} s of "
                                 "speech buffered")
            u = self._by_id.get(utt_id)
            if u is None or u.done:
                u = Utterance(utt_id)
                self._items.append(u)
                self._by_id[utt_id] = u
            if len(x):
                u.chunks.append(x)
                u.total += len(x)
                if u.first_audio is None:
                    u.first_audio = time.monotonic()
            u.done = u.done or done
            return u

    def end(self, utt_id: str) -> Utterance | None:
        """Mark ``utt_id`` complete; None if there is no such open utterance."""
        with self._lock:
            u = self._by_id.get(utt_id)
            if u is None or u.done:
                return None
            u.done = True
            return u

    def pull(self, n: int) -> tuple[np.ndarray, list[tuple[Utterance, int]]]:
        """Take n samples: (float32 [n], [(utterance, samples taken from it), ...]).

        An utterance that is open but has no audio yet (a stream that stalls) blocks the ones
        behind it and yields silence; a finished one is removed once fully taken."""
        out = np.zeros(n, np.float32)
        parts: list[tuple[Utterance, int]] = []
        pos = 0
        with self._lock:
            while pos < n and self._items:
                u = self._items[0]
                while pos < n and u.chunks:
                    chunk = u.chunks[0]
                    k = min(n - pos, len(chunk))
                    out[pos:pos + k] = chunk[:k]
                    if k == len(chunk):
                        u.chunks.popleft()
                    else:
                        u.chunks[0] = chunk[k:]
                    u.taken += k
                    pos += k
                    if parts and parts[-1][0] is u:
                        parts[-1] = (u, parts[-1][1] + k)
                    else:
                        parts.append((u, k))
                if u.done and not u.chunks:
                    self._items.popleft()
                    self._by_id.pop(u.id, None)
                    if not parts or parts[-1][0] is not u:
                        parts.append((u, 0))  # an empty utterance still ends
                    continue
                break  # open utterance waiting for more audio
        return out, parts

    def clear(self) -> list[Utterance]:
        """Drop everything queued (barge-in); returns the utterances dropped."""
        with self._lock:
            dropped = list(self._items)
            self._items.clear()
            self._by_id.clear()
            return dropped


def lookahead_frames(delay_frames: int, fps: float) -> int:
    """Video frames K of audio the motion model must have beyond a frame before its mouth row
    exists: the model's delay (``delay_frames`` × 10 ms), one analysis window (25 ms) and one
    hop for interpolation, less half a frame (a frame shows its slice's middle)."""
    need_s = delay_frames * HOP_SECONDS + WINDOW_SECONDS + HOP_SECONDS - 0.5 / fps
    return max(1, math.ceil(need_s * fps - 1e-9))


@dataclass
class FrameJob:
    """What ``advance`` produced for one output frame: driving keypoints [478, 2] float32,
    the frame's audio float32 [S] at 48 kHz, its index, and events to send."""

    session: Session
    index: int
    keypoints: np.ndarray
    audio: np.ndarray
    events: list[dict]
    speaking: bool


class Session:
    """A live talking-avatar session.

    Args:
        session_id: name used in events and metrics.
        avatar_state: the shared per-avatar objects (``runtime.live.scheduler.AvatarState``).
        motion_engine: the shared ``engines.motion.MotionEngine``.
        fps: video frame rate; 48000 / fps must be a whole number of samples (24, 25, 30, 50, 60…).
        seed: behaviour seed.
        max_buffer_s: speech buffer limit (``SpeechQueue``).
        on_event: called on the event loop with each event dict (``speech_started`` …).
        drive: optional per-frame override, ``drive(coeffs [19], pose [6]) -> (coeffs, pose)``,
            called in the worker thread right after the behaviour layer (e.g.
            ``runtime.webcam.drive.LiveWebcamDrive``: the webcam's face replaces the audio mouth
            and idle head while it is tracked). Also settable later as ``session.drive``.
    """

    def __init__(self, session_id: str, avatar_state, motion_engine, fps: int = 25,
                 seed: int = 0, max_buffer_s: float = 60.0,
                 on_event: Callable[[dict], None] | None = None,
                 drive: Callable[[np.ndarray, np.ndarray],
                                 tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        from engines.motion import FpsResampler
        from runtime.animation.behaviour import Behaviour

        if OUTPUT_SAMPLE_RATE % fps:
            raise ValueError(f"fps must divide {OUTPUT_SAMPLE_RATE}, got {fps}")
        self.id = session_id
        self.avatar = avatar_state
        self.fps = fps
        self.samples_per_frame = OUTPUT_SAMPLE_RATE // fps
        self.queue = SpeechQueue(max_buffer_s)
        self.on_event = on_event or (lambda event: None)
        self.drive = drive
        self.motion = motion_engine.stream()
        self.lookahead = lookahead_frames(motion_engine.delay_frames, fps)
        self.fps_resampler = FpsResampler(fps)
        self.behaviour = Behaviour(fps, seed=seed)
        self._down = None  # 48 kHz → 16 kHz streaming resampler (PyAV), made on first use
        self._delay: deque[tuple[np.ndarray, list[tuple[Utterance, int]]]] = deque()
        self._rows: deque[np.ndarray] = deque()
        self._last_row = np.zeros(_K + 1, np.float32)
        self._pitch_buf = np.zeros(0, np.float32)
        self._mute_rows = 0
        self._lock = threading.Lock()  # advance() (worker) vs interrupt() (loop)
        self.frame = 0
        self.state = "idle"
        self.closed = False
        self.frames_rendered = 0
        self.frames_dropped = 0
        self.audio_frames_dropped = 0
        self.video_track = SessionVideoTrack(self)
        self.audio_track = SessionAudioTrack(self)
        self.created = time.monotonic()

    # --- worker thread ------------------------------------------------------------------
    def _to16k(self, x48: np.ndarray) -> np.ndarray:
        import av

        if self._down is None:
            self._down = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray(x48[None], format="flt", layout="mono")
        frame.sample_rate = OUTPUT_SAMPLE_RATE
        out = [f.to_ndarray()[0] for f in self._down.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _f0(self, x48: np.ndarray, energy_db: float) -> float:
        """f0 at the end of the last 3 output slices (Praat, via ``runtime.audio.prosody``)."""
        from runtime.audio.prosody import pitch_track

        self._pitch_buf = np.concatenate([self._pitch_buf, x48])[-3 * len(x48):]
        if energy_db < -45.0 or len(self._pitch_buf) < 3 * len(x48):
            return 0.0
        times, f0 = pitch_track(self._pitch_buf, OUTPUT_SAMPLE_RATE)
        if not len(f0):
            return 0.0
        centre = (2.5 * len(x48)) / OUTPUT_SAMPLE_RATE
        return float(f0[int(np.abs(times - centre).argmin())])

    def advance(self) -> FrameJob:
        """Produce output frame ``self.frame``: take one slice of speech into the motion model,
        play the slice taken K frames ago with its mouth row, step the behaviour, pose the rig.
        Runs in the scheduler's worker thread."""
        from runtime.audio.prosody import SILENCE_DB

        s = self.samples_per_frame
        with self._lock:
            events: list[dict] = []
            x_in, parts = self.queue.pull(s)
            self._delay.append((x_in, parts))
            track = self.motion.push(self._to16k(x_in), SAMPLE_RATE)
            if len(track.coeffs):
                from engines.motion import MotionTrack

                both = MotionTrack(np.concatenate([track.coeffs, track.vad[:, None]], axis=1),
                                   track.vad, track.visemes, track.first_frame)
                for row in self.fps_resampler.push(both):
                    self._rows.append(row)
            if len(self._delay) > self.lookahead:
                x_out, played = self._delay.popleft()
                row = self._rows.popleft() if self._rows else self._last_row
            else:  # the first K frames of a session: silence, face at rest
                x_out, played = np.zeros(s, np.float32), []
                row = np.zeros(_K + 1, np.float32)
            self._last_row = row
            if self._mute_rows > 0:  # speech already in the model when interrupted
                row = np.zeros_like(row)
                self._mute_rows -= 1
            speaking_now = False
            for u, n in played:
                if not u.started and (n > 0 or u.done):
                    u.started = True
                    events.append({"type": "speech_started", "id": u.id,
                                   "_first_audio": u.first_audio or u.created})
                u.played += n
                speaking_now = speaking_now or n > 0
                if u.done and u.played >= u.total and not u.ended:
                    u.ended = True
                    events.append({"type": "speech_ended", "id": u.id,
                                   "played_ms": round(u.played / OUTPUT_SAMPLE_RATE * 1000),
                                   "duration_ms": round(u.duration_ms), "interrupted": False})
                elif not u.done:
                    speaking_now = True  # a stream that is still open keeps the state
            rms = float(np.sqrt(np.mean(x_out.astype(np.float64) ** 2)))
            energy = max(SILENCE_DB, 20 * math.log10(rms)) if rms > 0 else SILENCE_DB
            f0 = self._f0(x_out, energy)
            coeffs, pose = self.behaviour.step(row[:_K], float(row[_K]), energy, f0)
            if self.drive is not None:
                coeffs, pose = self.drive(coeffs, pose)
            keypoints = self.avatar.rig.keypoints(coeffs[None], pose[None])[0]
            job = FrameJob(self, self.frame, keypoints, x_out, events, speaking_now)
            self.frame += 1
            return job

    # --- event loop ---------------------------------------------------------------------
    def interrupt(self) -> list[dict]:
        """Barge-in: drop queued speech and the audio in the delay line; the mouth rows already
        computed for it are muted. Returns the ``speech_ended`` events (interrupted=True)."""
        events = []
        with self._lock:
            dropped = self.queue.clear()
            pending = {id(u): u for x, parts in self._delay for u, _ in parts}
            for u in dropped:
                pending.setdefault(id(u), u)
            self._delay = deque((np.zeros_like(x), []) for x, _ in self._delay)
            self._mute_rows = len(self._rows) + self.lookahead + 2
            self._rows.clear()
            for u in pending.values():
                if u.ended:
                    continue
                u.ended = True
                events.append({"type": "speech_ended", "id": u.id,
                               "played_ms": round(u.played / OUTPUT_SAMPLE_RATE * 1000),
                               "duration_ms": round(u.duration_ms), "interrupted": True})
        return events

    def deliver(self, job: FrameJob, video_frame, audio_frames: list) -> None:
        """Queue one frame's output on the tracks (``video_frame`` None = dropped) and send its
        events. On the event loop."""
        if self.closed:
            return
        if video_frame is None:
            self.frames_dropped += 1
        else:
            self.frames_rendered += 1
            self.video_track.put(video_frame)
        for frame in audio_frames:
            self.audio_track.put(frame)
        for event in job.events:
            self.on_event(event)
        if job.speaking and self.state != "speaking":
            self.state = "speaking"
            self.on_event({"type": "state", "state": "speaking"})
        elif not job.speaking and self.state == "speaking" and not self.queue.buffered:
            self.state = "idle"
            self.on_event({"type": "state", "state": "idle"})

    def close(self) -> None:
        """Stop the tracks; the scheduler forgets the session."""
        self.closed = True
        self.video_track.stop()
        self.audio_track.stop()


class _QueueTrack(MediaStreamTrack):
    """An aiortc track fed by the scheduler through a bounded queue (oldest dropped when full)."""

    def __init__(self, session: Session, maxsize: int) -> None:
        super().__init__()
        self.session = session
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, frame) -> None:
        if self.readyState != "live":
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    async def recv(self):
        from aiortc.mediastreams import MediaStreamError

        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._queue.put_nowait(None)


class SessionVideoTrack(_QueueTrack):
    """The avatar's video: ``av.VideoFrame`` rgb24, pts = first output-audio sample of the
    frame's slice, time base 1/48000."""

    kind = "video"

    def __init__(self, session: Session) -> None:
        super().__init__(session, VIDEO_QUEUE_FRAMES)


class SessionAudioTrack(_QueueTrack):
    """The avatar's voice: 20 ms ``av.AudioFrame`` s16 mono 48 kHz, pts = sample counter."""

    kind = "audio"

    def __init__(self, session: Session) -> None:
        super().__init__(session, AUDIO_QUEUE_FRAMES)


def audio_frames(samples: np.ndarray, first_sample: int) -> list:
    """float32 [n] 48 kHz → 20 ms ``av.AudioFrame`` s16 mono with pts = sample counter."""
    import av

    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    out = []
    for i in range(0, len(pcm), AUDIO_FRAME_SAMPLES):
        chunk = pcm[i:i + AUDIO_FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk[None], format="s16", layout="mono")
        frame.sample_rate = OUTPUT_SAMPLE_RATE
        frame.pts = first_sample + i
        frame.time_base = Fraction(1, OUTPUT_SAMPLE_RATE)
        out.append(frame)
    return out
