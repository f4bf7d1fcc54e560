"""One live session: queued speech in, lip-synced video frames and audio slices out, one clock.

A session owns its clock, its speech queue (``runtime.live.speech``), streaming motion state,
behaviour state and its two outgoing aiortc tracks (``runtime.live.tracks``). It does not pace
itself: the process's ``runtime.live.scheduler.Scheduler`` calls ``advance()`` once per video
frame for every session (in a worker thread, never on the event loop), renders all due sessions
in one batch, and hands each result to ``deliver()`` on the loop. A host without WebRTC gives the
session a ``sink`` instead: it then gets each composited image and its audio slice directly
(``runtime.integrations.stream``), and the tracks stay unused.

Timing (``DESIGN.md``, "One clock"): the session's ``runtime.clock.AvClock`` says which output
audio samples each video frame carries: frame t plays [clock.frame_start(t),
clock.frame_start(t + 1)), S = output rate / fps samples on average (1920 at 25 fps; 1601 or 1602
at 30000/1001 fps), and both tracks stamp their frames with that sample counter as pts. The
motion model needs ``lookahead_frames`` K of future audio, so the slice taken from the queue at
tick t is the one output frame t + K plays (a K-slice delay line); its mouth row is ready by
then. The model hears the speech through the project's streaming resampler (48 → 16 kHz,
``runtime.audio.resample``), which holds back up to ``DOWNSAMPLE_HOLD_S``; K counts that too.
Latency this adds: K frames (80 ms at 25 fps).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from engines.audio import HOP_SECONDS, OUTPUT_SAMPLE_RATE, SAMPLE_RATE, WINDOW_SECONDS
from engines.visemes import MOTION_COEFFICIENTS
from runtime.audio.resample import StreamResampler
from runtime.clock import AvClock
from runtime.live.events import SessionEvent, SpeechEnded, SpeechStarted, StateChanged
from runtime.live.speech import MAX_UTTERANCES, SpeechQueue, Utterance
from runtime.live.stages import StageTimes
from runtime.live.tracks import SessionAudioTrack, SessionVideoTrack

DOWNSAMPLE_HOLD_S = 0.001
"""Seconds of audio the 48 → 16 kHz ``StreamResampler`` (libswresample) holds back while
streaming: 1.0 ms, measured with 20 ms and 40 ms slices (``runtime.audio.resample``'s table;
soxr "HQ" would hold back 7 to 36.6 ms and cost a whole frame more of lookahead)."""
_K = len(MOTION_COEFFICIENTS)


def lookahead_frames(delay_frames: int, fps: float | Fraction,
                     hold_s: float = DOWNSAMPLE_HOLD_S) -> int:
    """Video frames K of audio the motion model must have beyond a frame before its mouth row
    exists: the model's delay (``delay_frames`` × 10 ms), one analysis window (25 ms), one hop
    for interpolation and what the resampler in front of it holds back (``hold_s`` seconds),
    less half a frame (a frame shows its slice's middle). 2 at 25 fps, 3 at 30000/1001."""
    fps = float(fps)
    need_s = delay_frames * HOP_SECONDS + WINDOW_SECONDS + HOP_SECONDS + hold_s - 0.5 / fps
    return max(1, math.ceil(need_s * fps - 1e-9))


@dataclass
class FrameJob:
    """What ``advance`` produced for one output frame: driving keypoints [478, 2] float32,
    the frame's audio float32 [frame_start(index + 1) − frame_start(index)] at the output rate,
    its index, and events to send. ``played``: (utterance id, samples of this frame's audio
    taken from it), in order, for hosts that count playback per utterance themselves
    (``runtime.integrations.stream``)."""

    session: Session
    index: int
    keypoints: np.ndarray
    audio: np.ndarray
    events: list[SessionEvent]
    speaking: bool
    played: tuple[tuple[str, int], ...] = ()


class Session:
    """A live talking-avatar session.

    Args:
        session_id: name used in events and metrics.
        avatar_state: the shared per-avatar objects (``runtime.live.scheduler.AvatarState``).
        motion_engine: the shared ``engines.motion.MotionEngine``.
        fps: video frame rate, exact (25, ``"30000/1001"``, a ``Fraction``); the session's
            ``clock`` is ``AvClock(fps)``. Raises ValueError outside 1–240 fps.
        seed: behaviour seed.
        max_buffer_s: speech buffer limit, seconds; max_utterances: most utterances queued
            (both ``SpeechQueue``).
        on_event: called on the event loop with each event (``runtime.live.events``:
            ``SpeechStarted``, ``SpeechEnded``, ``StateChanged``).
        drive: optional per-frame override, ``drive(coeffs [19], pose [6]) -> (coeffs, pose)``,
            called in the worker thread right after the behaviour layer (e.g.
            ``runtime.webcam.driver.LiveWebcamDrive``: the webcam's face replaces the audio mouth
            and idle head while it is tracked). Also settable later as ``session.drive``.
        sink: optional consumer of the frames instead of the tracks (hosts without WebRTC:
            ``runtime.integrations.stream``): ``sink(job, image)`` on the event loop once per
            frame, after the frame's events went to ``on_event``; ``image`` is the composited
            uint8 [H, W, 3] RGB frame, or None (dropped, or not rendered: ``render_video``);
            the audio is ``job.audio``. With a sink the scheduler wraps no ``av`` frames and the
            tracks stay empty. None (default): the tracks, as ``facecast serve`` uses them.

    Attributes:
        clock: the ``AvClock`` both tracks are stamped by; ``fps`` is ``clock.fps`` (exact).
        queue: the ``SpeechQueue`` speech is added to. lookahead: K, frames of delay line.
        frame: index of the next frame ``advance`` produces.
        video_track, audio_track: the outgoing ``runtime.live.tracks`` tracks.
    """

    def __init__(self, session_id: str, avatar_state, motion_engine,
                 fps: int | str | Fraction = 25,
                 seed: int = 0, max_buffer_s: float = 60.0, max_utterances: int = MAX_UTTERANCES,
                 on_event: Callable[[SessionEvent], None] | None = None,
                 drive: Callable[[np.ndarray, np.ndarray],
                                 tuple[np.ndarray, np.ndarray]] | None = None,
                 sink: Callable[[FrameJob, np.ndarray | None], None] | None = None) -> None:
        from engines.motion import FpsResampler
        from runtime.animation.behaviour import Behaviour

        self.clock = AvClock(fps)
        self.id = session_id
        self.avatar = avatar_state
        self.fps = self.clock.fps
        self.queue = SpeechQueue(max_buffer_s, max_utterances)
        self.on_event = on_event or (lambda event: None)
        self.drive = drive
        self.sink = sink
        self.motion = motion_engine.stream()
        self.lookahead = lookahead_frames(motion_engine.delay_frames, self.fps)
        self.fps_resampler = FpsResampler(self.fps)
        self.behaviour = Behaviour(self.fps, seed=seed)
        self._down = StreamResampler(OUTPUT_SAMPLE_RATE, SAMPLE_RATE)  # for the motion model
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
        self.frames_unwatched = 0
        self.render_video = True
        """False while nobody receives the session's video (a server session before its peer
        connects, or while its peer sends no feedback): the scheduler then skips its render and
        paste-back, and its audio, events and speech timeline go on as before."""
        self.audio_frames_dropped = 0
        self.video_track = SessionVideoTrack()
        self.audio_track = SessionAudioTrack()
        self.created = time.monotonic()

    # --- worker thread ------------------------------------------------------------------
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

    def advance(self, stages: StageTimes | None = None) -> FrameJob:
        """Produce output frame ``self.frame``: take the slice frame + K will play into the motion
        model, play the slice taken K frames ago with its mouth row, step the behaviour, pose
        the rig. Runs in the scheduler's worker thread. ``stages`` (optional) gets the seconds
        of the ``motion``, ``behaviour`` and ``rig`` stages (``runtime.live.stages``)."""
        from runtime.audio.prosody import SILENCE_DB

        clock = time.perf_counter
        t_motion = clock()
        start = self.clock.frame_start
        t, k = self.frame, self.lookahead
        with self._lock:
            events: list[SessionEvent] = []
            x_in, parts = self.queue.pull(start(t + k + 1) - start(t + k))
            self._delay.append((x_in, parts))
            track = self.motion.push(self._down.push(x_in), SAMPLE_RATE)
            if len(track.coeffs):
                from engines.motion import MotionTrack

                both = MotionTrack(np.concatenate([track.coeffs, track.vad[:, None]], axis=1),
                                   track.vad, track.visemes, track.first_frame)
                for row in self.fps_resampler.push(both):
                    self._rows.append(row)
            t_behaviour = clock()
            if len(self._delay) > self.lookahead:
                x_out, played = self._delay.popleft()
                row = self._rows.popleft() if self._rows else self._last_row
            else:  # the first K frames of a session: silence, face at rest
                x_out, played = np.zeros(start(t + 1) - start(t), np.float32), []
                row = np.zeros(_K + 1, np.float32)
            self._last_row = row
            if self._mute_rows > 0:  # speech already in the model when interrupted
                row = np.zeros_like(row)
                self._mute_rows -= 1
            speaking_now = False
            for u, n in played:
                if not u.started and (n > 0 or u.done):
                    u.started = True
                    events.append(SpeechStarted(u.id, first_audio=u.first_audio or u.created))
                u.played += n
                speaking_now = speaking_now or n > 0
                if u.done and u.played >= u.total and not u.ended:
                    u.ended = True
                    events.append(SpeechEnded(u.id, round(u.played / OUTPUT_SAMPLE_RATE * 1000),
                                              round(u.duration_ms), interrupted=False))
                elif not u.done:
                    speaking_now = True  # a stream that is still open keeps the state
            rms = float(np.sqrt(np.mean(x_out.astype(np.float64) ** 2)))
            energy = max(SILENCE_DB, 20 * math.log10(rms)) if rms > 0 else SILENCE_DB
            f0 = self._f0(x_out, energy)
            coeffs, pose = self.behaviour.step(row[:_K], float(row[_K]), energy, f0)
            if self.drive is not None:
                coeffs, pose = self.drive(coeffs, pose)
            t_rig = clock()
            keypoints = self.avatar.rig.keypoints(coeffs[None], pose[None])[0]
            if stages is not None:
                t_end = clock()
                stages.add("motion", t_behaviour - t_motion)
                stages.add("behaviour", t_rig - t_behaviour)
                stages.add("rig", t_end - t_rig)
            job = FrameJob(self, self.frame, keypoints, x_out, events, speaking_now,
                           tuple((u.id, n) for u, n in played))
            self.frame += 1
            return job

    # --- event loop ---------------------------------------------------------------------
    def interrupt(self) -> list[SpeechEnded]:
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
                events.append(SpeechEnded(u.id, round(u.played / OUTPUT_SAMPLE_RATE * 1000),
                                          round(u.duration_ms), interrupted=True))
        return events

    def deliver(self, job: FrameJob, video_frame, audio_frames: list) -> None:
        """Queue one frame's output on the tracks (``video_frame`` None: dropped, or not
        rendered because nobody watches: ``render_video``) and send its events; with a
        ``sink``, ``video_frame`` is the composited image (or None), ``audio_frames`` is empty,
        and the frame goes to the sink after its events. On the event loop."""
        if self.closed:
            return
        if video_frame is None and not self.render_video:
            self.frames_unwatched += 1
        elif video_frame is None:
            self.frames_dropped += 1
        else:
            self.frames_rendered += 1
            if self.sink is None:
                self.video_track.put(video_frame)
        for frame in audio_frames:
            self.audio_track.put(frame)
        for event in job.events:
            self.on_event(event)
        if job.speaking and self.state != "speaking":
            self.state = "speaking"
            self.on_event(StateChanged("speaking"))
        elif not job.speaking and self.state == "speaking" and not self.queue.buffered:
            self.state = "idle"
            self.on_event(StateChanged("idle"))
        if self.sink is not None:
            self.sink(job, video_frame)

    def close(self) -> None:
        """Stop the tracks; the scheduler forgets the session."""
        self.closed = True
        self.video_track.stop()
        self.audio_track.stop()
