"""Serving the motion model: ONNX Runtime, offline and streaming, resampled to any video fps.

No torch here. The ONNX graph (``engines/models/motion.onnx``, exported by
``tools/export_motion.py``) has inputs ``feats`` [B, T + 2, 80] and ``h`` [layers, B, hidden]
and outputs ``coeffs`` [B, T, K], ``vad`` [B, T] (logit), ``visemes`` [B, T, 15] (logits),
``h_out``; its metadata holds ``MotionDims`` as JSON under ``facecast.motion_dims``.

Timing: coefficient frame k describes the face at ``frame_time_s(k)`` = k · 10 ms + 12.5 ms
(the centre of feature window k). The network output at step t is frame t − D (D =
``delay_frames``), so frame k is known once audio up to frame k + D's window end has arrived:
the lookahead. At the end of a stream D frames of silence flush the rest out (``finish``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.audio import HOP_SECONDS, LOG_FLOOR, N_MELS, SAMPLE_RATE, WINDOW_SECONDS
from engines.features import StreamingLogMel, log_mel
from engines.visemes import MOTION_COEFFICIENTS

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "motion.onnx"
CONTEXT_FRAMES = 2
"""Feature frames of left context the first convolution needs (kernel 3, valid padding).
At a stream's start they are silence-floor frames."""
_FLOOR = np.float32(np.log10(LOG_FLOOR))


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

    def initial_state(self) -> np.ndarray:
        """Zero GRU state, float32 [layers, 1, hidden]."""
        return np.zeros((self.layers, 1, self.hidden), np.float32)

    def run(self, feats_with_context: np.ndarray, h: np.ndarray
            ) -> tuple[MotionTrack, np.ndarray]:
        """One graph call: feats [T + 2, 80] (2 context frames first) and state → raw outputs
        for T steps (not yet delay-aligned) and the next state."""
        coeffs, vad, visemes, h_out = self.session.run(
            None, {"feats": feats_with_context[None].astype(np.float32), "h": h})
        track = MotionTrack(coeffs[0], (1.0 / (1.0 + np.exp(-vad[0]))).astype(np.float32),
                            visemes[0].argmax(axis=-1))
        return track, h_out

    def offline(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> MotionTrack:
        """Motion for a whole clip: float32 [N] mono 16 kHz → one frame per feature frame
        (``engines.features.n_frames(N)`` rows), delay already removed. Raises as
        ``engines.features.check_audio``."""
        feats = log_mel(audio, sample_rate)
        pad = np.full((CONTEXT_FRAMES, N_MELS), _FLOOR, np.float32)
        tail = np.full((self.delay_frames, N_MELS), _FLOOR, np.float32)
        track, _ = self.run(np.concatenate([pad, feats, tail]), self.initial_state())
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
        self._steps = 0  # network steps run so far

    @property
    def frames_out(self) -> int:
        """Coefficient frames produced so far (the next frame's index k)."""
        return max(0, self._steps - self.engine.delay_frames)

    def _advance(self, feats: np.ndarray) -> MotionTrack:
        if len(feats) == 0:
            return _concat([])
        track, self._h = self.engine.run(np.concatenate([self._context, feats]), self._h)
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
