"""Serving the motion model: ONNX Runtime, offline and streaming, resampled to any video fps.

No torch here. The ONNX graph (``engines/models/motion.onnx``, exported by
``tools/export_motion.py``) has inputs ``feats`` [B, T + 2, 80] and ``h`` [layers, B, hidden]
and outputs ``coeffs`` [B, T, K], ``vad`` [B, T] (logit), ``visemes`` [B, T, 15] (logits),
``h_out``; its metadata holds ``MotionDims`` as JSON under ``facecast.motion_dims``.

Timing: coefficient frame k describes the face at ``frame_time_s(k)`` = k · 10 ms + 12.5 ms
(the centre of feature window k). The network output at step t is frame t − D (D =
``delay_frames``), so frame k is known once audio up to frame k + D's window end has arrived:
the lookahead. At the end of a stream D frames of silence flush the rest out (``finish``).

State resets in pauses: the GRU was trained on 3 s crops that start from a zero state
(``tools/train_motion.py``), so after minutes of a live stream its state drifts where training
never took it. Measured on a live session: after a dozen prompts the mouth stayed shut through
"...to lock, or unlock" (jawOpen ≤ 0.16 where a fresh state gives 0.6). Both the offline and the
streaming path therefore reset the state once ``RESET_AFTER_QUIET_FRAMES`` consecutive feature
frames are quiet (``QuietGate``), which puts every utterance back where training started it. A
silent pause resets to the state a zero state reaches in silence (``MotionEngine.rest_state``;
zero itself replays a start-up jaw flicker); a pause of room noise resets to zero, the start
of training's noise-only crops (the silence rest state followed by noise reads as a speech
onset: the mouth opened on 86% of pink-noise frames in ``facecast eval lipsync``). The rule depends only on the features, so it cuts the
graph at the same frames whatever the chunking, and streaming still equals offline.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.audio import HOP_SECONDS, LOG_FLOOR, N_MELS, SAMPLE_RATE, WINDOW_SECONDS
from engines.features import StreamingLogMel, log_mel

if TYPE_CHECKING:
    from collections.abc import Sequence
from engines.visemes import MOTION_COEFFICIENTS

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "motion.onnx"
CONTEXT_FRAMES = 2
"""Feature frames of left context the first convolution needs (kernel 3, valid padding).
At a stream's start they are silence-floor frames."""
_FLOOR = np.float32(np.log10(LOG_FLOOR))

QUIET_DBFS = -50.0
"""A feature frame below this level (dB re full scale, ``frame_level_db``) is quiet whatever
the background: 10 dB under a quiet room's speech at arm's length."""
QUIET_ABOVE_FLOOR_DB = 8.0
"""...and so is one within this many dB of the noise floor (the quietest frame of the last
``NOISE_FLOOR_FRAMES``), so a pause is found in a noisy room too. Speech runs 20–40 dB over
the floor; stop closures (< 100 ms) come near it but are too short to reset."""
NOISE_FLOOR_FRAMES = 300
"""Feature frames (3 s) over which the noise floor is the minimum level."""
RESET_AFTER_QUIET_FRAMES = 20
"""Consecutive quiet frames (200 ms, a pause between phrases) after which the GRU state is
reset (``MotionEngine.rest_state``); once per pause."""
REST_FRAMES = 100
"""Feature frames (1 s) of silence that define the rest state."""


@lru_cache(maxsize=1)
def _level_offset_db() -> float:
    """Calibration of ``frame_level_db``: white noise at −30 dBFS RMS must read −30 dB."""
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
    noise *= np.float32(10 ** (-30 / 20))
    raw = 10 * np.log10(np.sum(10.0 ** log_mel(noise).astype(np.float64), axis=1))
    return float(-30.0 - np.median(raw))


def frame_level_db(feats: np.ndarray) -> np.ndarray:
    """Level of log-mel frames float32 [T, 80] (``engines.features.log_mel``) → float64 [T], dB
    re full scale, calibrated so white noise of RMS r reads 20·log10(r); digital silence reads
    about −100 − its band count's share."""
    raw = 10 * np.log10(np.sum(10.0 ** np.asarray(feats, np.float64), axis=1))
    return raw + _level_offset_db()


class QuietGate:
    """Finds the pauses after which the motion model's state is reset (module docstring).

    Feed the levels of consecutive feature frames (``frame_level_db``) to ``cuts``; it returns
    the positions after which to reset and whether the pause was silent (every frame under
    ``QUIET_DBFS``) or noise. Stateful across calls, so any chunking gives the same positions.
    """

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=NOISE_FLOOR_FRAMES)
        self._quiet_run = 0
        self._run_silent = True

    def cuts(self, levels: Sequence[float] | np.ndarray) -> list[tuple[int, bool]]:
        """Levels float [T] of the next T frames → sorted (j, silent), j in 1..T: reset the
        state after frame j − 1 of this batch (before frame j); ``silent`` when the whole pause
        so far was under ``QUIET_DBFS``."""
        out = []
        for j, level in enumerate(np.asarray(levels, np.float64)):
            self._recent.append(float(level))
            floor = min(self._recent)
            silent = level < QUIET_DBFS
            if silent or level < floor + QUIET_ABOVE_FLOOR_DB:
                self._run_silent = self._run_silent and silent if self._quiet_run else silent
                self._quiet_run += 1
            else:
                self._quiet_run = 0
            if self._quiet_run == RESET_AFTER_QUIET_FRAMES:
                out.append((j + 1, self._run_silent))
        return out


def frame_time_s(k: np.ndarray | int) -> np.ndarray:
    """Time in seconds that coefficient frame k describes (its feature window's centre)."""
    return np.asarray(k, dtype=np.float64) * HOP_SECONDS + WINDOW_SECONDS / 2


@dataclass(frozen=True)
class MotionTrack:
    """Motion for a stretch of audio at 100 frames per second.

    Attributes:
        coeffs: float32 [T, K] in [0, 1], ``MOTION_COEFFICIENTS`` order.
        vad: float32 [T] speech probability.
        visemes: int64 [T] most likely viseme index (``engines.visemes.VISEMES``).
        first_frame: index k of row 0 (times from ``frame_time_s``).
    """

    coeffs: np.ndarray
    vad: np.ndarray
    visemes: np.ndarray
    first_frame: int = 0

    def named(self, row: int) -> dict[str, float]:
        """One frame as name → value (side-less names; see ``avatars.rig``)."""
        return {n: float(v) for n, v in zip(MOTION_COEFFICIENTS, self.coeffs[row])}


def _concat(tracks: list[MotionTrack]) -> MotionTrack:
    k = len(MOTION_COEFFICIENTS)
    if not tracks:
        return MotionTrack(np.zeros((0, k), np.float32), np.zeros(0, np.float32),
                           np.zeros(0, np.int64))
    return MotionTrack(np.concatenate([t.coeffs for t in tracks]),
                       np.concatenate([t.vad for t in tracks]),
                       np.concatenate([t.visemes for t in tracks]), tracks[0].first_frame)


class MotionEngine:
    """An ONNX Runtime session of the motion model (thread-safe to share; ORT sessions are).

    Args:
        model_path: the .onnx file (default: the committed model).
        providers: ONNX Runtime execution providers (default CPU).

    Raises ``FileNotFoundError`` if the model is missing and ``ValueError`` if it lacks the
    ``facecast.motion_dims`` metadata.
    """

    def __init__(self, model_path: str | Path = DEFAULT_MODEL,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"motion model not found: {path} (run tools/train_motion.py)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options,
                                            providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "facecast.motion_dims" not in meta:
            raise ValueError(f"{path} has no facecast.motion_dims metadata")
        dims = json.loads(meta["facecast.motion_dims"])
        self.delay_frames = int(dims["delay_frames"])
        self.layers = int(dims["layers"])
        self.hidden = int(dims["hidden"])
        self.lookahead_ms = 1000.0 * (self.delay_frames * HOP_SECONDS + WINDOW_SECONDS / 2)
        floor = np.full((CONTEXT_FRAMES + REST_FRAMES, N_MELS), _FLOOR, np.float32)
        self._rest = self.run(floor, self.initial_state())[1]

    def initial_state(self) -> np.ndarray:
        """Zero GRU state, float32 [layers, 1, hidden]."""
        return np.zeros((self.layers, 1, self.hidden), np.float32)

    def rest_state(self) -> np.ndarray:
        """The state a pause resets to, float32 [layers, 1, hidden]: where the zero state goes
        after ``REST_FRAMES`` of digital silence, the way every training crop that starts
        before an utterance reaches its speech. Zero itself would replay the model's start-up
        transient (a jaw flicker up to 0.1) in every pause."""
        return self._rest.copy()

    def run(self, feats_with_context: np.ndarray, h: np.ndarray
            ) -> tuple[MotionTrack, np.ndarray]:
        """One graph call: feats [T + 2, 80] (2 context frames first) and state → raw outputs
        for T steps (not yet delay-aligned) and the next state."""
        coeffs, vad, visemes, h_out = self.session.run(
            None, {"feats": feats_with_context[None].astype(np.float32), "h": h})
        track = MotionTrack(coeffs[0], (1.0 / (1.0 + np.exp(-vad[0]))).astype(np.float32),
                            visemes[0].argmax(axis=-1))
        return track, h_out

    def run_gated(self, feats_with_context: np.ndarray, h: np.ndarray, gate: QuietGate
                  ) -> tuple[MotionTrack, np.ndarray]:
        """``run`` with the state reset at the pauses ``gate`` finds (module docstring): the
        graph is called once per stretch between resets. Same shapes as ``run``."""
        t = len(feats_with_context) - CONTEXT_FRAMES
        cuts = gate.cuts(frame_level_db(feats_with_context[CONTEXT_FRAMES:]))
        tracks, start = [], 0
        for end, reset in [*cuts, (t, None)]:
            if end > start:
                track, h = self.run(feats_with_context[start:end + CONTEXT_FRAMES], h)
                tracks.append(track)
            if reset is not None:  # silence: the rest state; noise: zero, as training's
                h = self.rest_state() if reset else self.initial_state()  # noise-only crops
            start = end
        return _concat(tracks), h

    def offline(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> MotionTrack:
        """Motion for a whole clip: float32 [N] mono 16 kHz → one frame per feature frame
        (``engines.features.n_frames(N)`` rows), delay already removed. Raises as
        ``engines.features.check_audio``."""
        feats = log_mel(audio, sample_rate)
        pad = np.full((CONTEXT_FRAMES, N_MELS), _FLOOR, np.float32)
        tail = np.full((self.delay_frames, N_MELS), _FLOOR, np.float32)
        track, _ = self.run_gated(np.concatenate([pad, feats, tail]), self.initial_state(),
                                  QuietGate())
        d = self.delay_frames
        return MotionTrack(track.coeffs[d:], track.vad[d:], track.visemes[d:], 0)

    def stream(self) -> MotionStream:
        """A new streaming state for one audio stream."""
        return MotionStream(self)


class MotionStream:
    """Streaming motion for one audio stream: ``push`` 16 kHz chunks (20 ms WebRTC frames or
    any length), get the coefficient frames they complete; ``finish`` at the end of speech.

    Concatenating everything ``push`` and ``finish`` return equals ``MotionEngine.offline`` on
    the concatenated audio (to float rounding, 1e-5).
    """

    def __init__(self, engine: MotionEngine) -> None:
        self.engine = engine
        self.features = StreamingLogMel()
        self._context = np.full((CONTEXT_FRAMES, N_MELS), _FLOOR, np.float32)
        self._h = engine.initial_state()
        self._gate = QuietGate()
        self._steps = 0  # network steps run so far

    @property
    def frames_out(self) -> int:
        """Coefficient frames produced so far (the next frame's index k)."""
        return max(0, self._steps - self.engine.delay_frames)

    def _advance(self, feats: np.ndarray) -> MotionTrack:
        if len(feats) == 0:
            return _concat([])
        track, self._h = self.engine.run_gated(np.concatenate([self._context, feats]), self._h,
                                               self._gate)
        self._context = np.concatenate([self._context, feats])[-CONTEXT_FRAMES:]
        before = self._steps
        self._steps += len(feats)
        skip = max(0, self.engine.delay_frames - before)  # outputs for frames k < 0
        first = max(0, before - self.engine.delay_frames)
        return MotionTrack(track.coeffs[skip:], track.vad[skip:], track.visemes[skip:], first)

    def push(self, chunk: np.ndarray, sample_rate: int = SAMPLE_RATE) -> MotionTrack:
        """Add float32 [n] samples (16 kHz); returns the newly completed frames (maybe none)."""
        return self._advance(self.features.push(chunk, sample_rate))

    def finish(self) -> MotionTrack:
        """End of stream: flush the last ``delay_frames`` frames with silence features, then
        reset for a new utterance."""
        tail = np.full((self.engine.delay_frames, N_MELS), _FLOOR, np.float32)
        out = self._advance(tail)
        self.__init__(self.engine)  # type: ignore[misc]
        return out


def resample_to_fps(coeffs: np.ndarray, fps: float, n_video_frames: int | None = None
                    ) -> np.ndarray:
    """Coefficient frames at 100 Hz [T, K] → video frames [F, K] by linear interpolation.

    Video frame n shows the mouth for the middle of its audio slice, time (n + 0.5) / fps;
    coefficient frame k is at ``frame_time_s(k)``; before the first and after the last frame
    the nearest value holds. F defaults to the video frames of the audio the T feature windows
    span: floor(((T − 1) · 10 ms + 25 ms) · fps); pass the exact count from the sample count
    (floor(N / (sample_rate / fps))) where it is known.
    """
    c = np.asarray(coeffs, dtype=np.float32)
    if n_video_frames is None:
        span_s = (len(c) - 1) * HOP_SECONDS + WINDOW_SECONDS if len(c) else 0.0
        n_video_frames = int(np.floor(span_s * fps + 1e-9))
    if len(c) == 0:
        return np.zeros((n_video_frames, c.shape[1] if c.ndim == 2 else 0), np.float32)
    t = (np.arange(n_video_frames) + 0.5) / fps
    src = frame_time_s(np.arange(len(c)))
    return np.stack([np.interp(t, src, c[:, j]) for j in range(c.shape[1])],
                    axis=1).astype(np.float32)


class FpsResampler:
    """Streaming form of ``resample_to_fps``: feed coefficient frames as ``MotionStream`` yields
    them, get each video frame as soon as the coefficient frames around its time exist.

    Args:
        fps: output video frame rate (e.g. 25, 30, 60).
    """

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.next_frame = 0
        self._k = -1  # index of the newest coefficient frame seen
        self._prev: np.ndarray | None = None
        self._last: np.ndarray | None = None

    def _emit_until(self, limit_s: float) -> list[np.ndarray]:
        """Video frames whose time is at or before ``limit_s`` (the newest coefficient frame)."""
        assert self._last is not None
        out = []
        while (t := (self.next_frame + 0.5) / self.fps) <= limit_s + 1e-12:
            if self._prev is None:
                out.append(self._last.copy())
            else:
                w = min(1.0, max(0.0, (t - (limit_s - HOP_SECONDS)) / HOP_SECONDS))
                out.append(((1 - w) * self._prev + w * self._last).astype(np.float32))
            self.next_frame += 1
        return out

    def push(self, track: MotionTrack) -> np.ndarray:
        """Add coefficient frames (consecutive, from ``MotionStream``); returns float32 [m, K]
        video frames completed (m may be 0)."""
        out: list[np.ndarray] = []
        for row in track.coeffs:
            self._prev, self._last = self._last, np.asarray(row, np.float32)
            self._k += 1
            out += self._emit_until(float(frame_time_s(self._k)))
        k = len(MOTION_COEFFICIENTS)
        return np.stack(out) if out else np.zeros((0, k), np.float32)

    def finish(self, n_video_frames: int) -> np.ndarray:
        """Emit the remaining frames up to ``n_video_frames`` in all, holding the last value."""
        out = []
        while self.next_frame < n_video_frames and self._last is not None:
            out.append(self._last.copy())
            self.next_frame += 1
        k = len(MOTION_COEFFICIENTS)
        return np.stack(out) if out else np.zeros((0, k), np.float32)
