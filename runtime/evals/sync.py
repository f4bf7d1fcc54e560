"""``facecast eval sync``: an independent lip-sync checker for rendered MP4 files.

The judge shares nothing with our own models: the file is decoded by PyAV (FFmpeg), the mouth is
measured by mediapipe's legacy Face Mesh (0.10.21, refined, tracking mode, one face), and the
offset comes from a plain cross-correlation (numpy). It measures what a viewer receives, so it can
be pointed at any recording: ``facecast`` output, a capture of a WebRTC session, another product.

Method
------
1. **Decode** the first video and the first audio stream in one demuxing pass. Every video
   frame's time is its presentation time ``frame.pts × frame.time_base`` on the container clock
   (never an assumed frame rate); the audio (any codec) is resampled by PyAV's
   ``AudioResampler(format="flt", layout="mono", rate=16000)`` and placed on the same clock by
   its first decoded frame's time.
2. **Mouth gap** per frame: the largest distance of the central inner-lip pairs (Face Mesh
   82/87, 13/14, 312/317) divided by the inter-ocular distance (eye-corner centres 33/133 and
   263/362), both in image pixels (``avatars.rig.inner_lip_gap_iod``). Frames where mediapipe
   finds no face are counted and filled by linear interpolation from their neighbours (the
   nearest value at the ends).
3. **Signals on one 10 ms grid** (the audio clock's hops): the audio envelope is the RMS level
   of a centred 25 ms window every 10 ms, in dB, floored at (maximum − ``FLOOR_DB``) and lightly
   smoothed (3-tap [¼, ½, ¼]); the mouth signal is the per-frame gap placed at each frame's
   *mid-time*, its pts plus half its duration (frame n shows the mouth for the audio slice
   [n·S, (n+1)·S), ``shared/DESIGN.md``), linearly interpolated onto the grid (no extrapolation).
4. **Offset**: for every lag d in [−max_lag, +max_lag] in 10 ms steps, the Pearson correlation
   of gap(t) with env(t − d) over the grid points where both exist. The best lag is the argmax,
   refined below one hop by fitting a parabola through the peak and its two neighbours
   (the quadratic peak interpolation of J. O. Smith, *Spectral Audio Signal Processing*,
   "Quadratic Interpolation of Spectral Peaks"). A positive offset means the mouth *lags* the
   voice: mouth(t) follows env(t − d) with d > 0. The idea of judging A/V sync by the offset that
   best aligns mouth motion with audio is that of SyncNet (Chung & Zisserman, "Out of time:
   automated lip sync in the wild", 2016); here with a hand-made mouth feature instead of a
   learned one, so the judge has no weights of its own.

The figure is the offset that best aligns mouth opening with loudness. On real footage recorded
in sync it can come out a little negative (mouth ahead), since lips start moving before the
sound they shape; compare offsets with those of a reference recording, not only with zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatars.rig import inner_lip_gap_iod

SAMPLE_RATE = 16_000
"""Rate (Hz) the audio is resampled to before the envelope is taken."""
HOP_S = 0.010
"""Grid step of both signals and of the lag search, seconds."""
WINDOW_S = 0.025
"""RMS window of the audio envelope, seconds (centred on each grid point)."""
FLOOR_DB = 50.0
"""Envelope floor below its maximum, dB: quieter noise does not steer the correlation."""
MIN_SECONDS = 1.0
"""Shortest video, audio and overlap of the two that is judged."""
MIN_OVERLAP_S = 0.5
"""Fewest seconds of overlap a lag needs for its correlation to count (else NaN)."""


@dataclass(frozen=True)
class SyncReport:
    """What ``evaluate_sync`` found.

    Attributes:
        av_offset_ms: lag of the mouth behind the voice, milliseconds, sub-hop refined;
            positive when the mouth lags the voice, negative when it leads.
        corr: Pearson correlation of the mouth gap with the audio envelope (dB) at the best
            whole-hop lag, in [−1, 1]; around 0.5 or more for speech with a moving mouth.
        frames: decoded video frames.
        frames_without_face: frames where mediapipe found no face (their gap is interpolated).
        fps: frame rate measured from the video pts (1 / median frame interval), frames/s.
        audio_seconds: decoded audio duration, seconds.
    """

    av_offset_ms: float
    corr: float
    frames: int
    frames_without_face: int
    fps: float
    audio_seconds: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (floats rounded for reading)."""
        return {
            "av_offset_ms": round(self.av_offset_ms, 1),
            "corr": round(self.corr, 4),
            "frames": self.frames,
            "frames_without_face": self.frames_without_face,
            "fps": round(self.fps, 3),
            "audio_seconds": round(self.audio_seconds, 3),
        }


@dataclass(frozen=True)
class _Decoded:
    frame_times: np.ndarray  # float64 [F] seconds, presentation order
    gaps: np.ndarray  # float64 [F] gap / IOD, NaN where no face
    audio: np.ndarray  # float32 [N] mono at SAMPLE_RATE
    audio_start: float  # seconds, container clock


def _decode(path: Path) -> _Decoded:
    """Decode ``path`` and measure the mouth in every video frame (see the module docstring)."""
    import av  # PyAV and mediapipe: evaluation-only dependencies, imported on use

    from avatars.enroll import import_mediapipe, native_stderr_silenced
    from runtime.evals.face import open_media

    mp = import_mediapipe()
    container = open_media(path)
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        vstream = container.streams.video[0]
        astream = container.streams.audio[0]
        vstream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        times: list[float] = []
        gaps: list[float] = []
        chunks: list[np.ndarray] = []
        audio_start: float | None = None
        try:
            with native_stderr_silenced(), mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True,
            ) as mesh:
                for packet in container.demux(vstream, astream):
                    for frame in packet.decode():
                        if isinstance(frame, av.AudioFrame):
                            if audio_start is None:
                                if frame.time is None:
                                    raise ValueError(f"{path}: audio frame without a timestamp")
                                audio_start = float(frame.time)
                            chunks.extend(f.to_ndarray().reshape(-1)
                                          for f in resampler.resample(frame))
                        else:
                            if frame.time is None:
                                raise ValueError(f"{path}: video frame without a pts")
                            times.append(float(frame.time))
                            gaps.append(_mouth_gap(mesh, frame.to_ndarray(format="rgb24")))
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ValueError(f"cannot decode {path}: {why}") from None
    if not times:
        raise ValueError(f"{path}: no decodable video frames")
    if audio_start is None or not chunks:
        raise ValueError(f"{path}: no decodable audio")
    order = np.argsort(times, kind="stable")
    return _Decoded(
        frame_times=np.asarray(times, dtype=np.float64)[order],
        gaps=np.asarray(gaps, dtype=np.float64)[order],
        audio=np.concatenate(chunks).astype(np.float32, copy=False),
        audio_start=audio_start,
    )


def _mouth_gap(mesh: Any, rgb: np.ndarray) -> float:
    """Inner-lip gap / inter-ocular distance of the face in uint8 RGB [H, W, 3]; NaN if none."""
    h, w = rgb.shape[:2]
    result = mesh.process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
        return math.nan
    lm = np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark],
                  dtype=np.float64)
    return float(inner_lip_gap_iod(lm[None])[0])


def audio_envelope(audio: np.ndarray, rate: int = SAMPLE_RATE, hop_s: float = HOP_S,
                   window_s: float = WINDOW_S, floor_db: float = FLOOR_DB) -> np.ndarray:
    """Level envelope of mono audio, one value per hop.

    Args:
        audio: float [N] samples in [−1, 1].
        rate: sample rate, Hz.
        hop_s: hop, seconds; value k is centred on sample round(k · hop_s · rate).
        window_s: RMS window, seconds (zero-padded at the ends).
        floor_db: values are floored at (maximum − floor_db).

    Returns:
        float64 [ceil(N / hop)] RMS level in dB (re full scale 1.0), floored, then smoothed with
        a centred 3-tap [¼, ½, ¼] filter (no delay).
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    hop = round(float(hop_s) * rate)
    win = round(float(window_s) * rate)
    n = -(-x.size // hop)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    centres = np.arange(n) * hop
    lo = np.clip(centres - win // 2, 0, x.size)
    hi = np.clip(centres - win // 2 + win, 0, x.size)
    rms = np.sqrt(np.maximum(csum[hi] - csum[lo], 0.0) / win)
    db = 20.0 * np.log10(rms + 1e-10)
    db = np.maximum(db, db.max() - floor_db)
    padded = np.concatenate([db[:1], db, db[-1:]])
    return 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]


def _fill_missing(values: np.ndarray) -> np.ndarray:
    """NaNs replaced by linear interpolation over the index (nearest value at the ends)."""
    ok = np.isfinite(values)
    idx = np.arange(values.size)
    return np.interp(idx, idx[ok], values[ok])


def lagged_correlation(gap: np.ndarray, env: np.ndarray, max_lag: int,
                       min_overlap: int) -> np.ndarray:
    """Pearson correlation of gap[k] with env[k − d] for d = −max_lag … +max_lag.

    Args:
        gap, env: float [K] signals on one grid, NaN where undefined.
        max_lag: largest |d|, in grid steps.
        min_overlap: fewest grid points both signals must share at a lag.

    Returns:
        float64 [2·max_lag + 1]; entry i is lag d = i − max_lag. NaN where the overlap is under
        ``min_overlap`` points or a signal is constant over it.
    """
    k = gap.size
    out = np.full(2 * max_lag + 1, np.nan)
    for i, d in enumerate(range(-max_lag, max_lag + 1)):
        # gap indices j in [max(0, d), min(k, k + d)); env index j − d.
        g = gap[max(0, d):min(k, k + d)]
        e = env[max(0, -d):min(k, k - d)]
        ok = np.isfinite(g) & np.isfinite(e)
        if ok.sum() < min_overlap:
            continue
        g = g[ok] - g[ok].mean()
        e = e[ok] - e[ok].mean()
        denom = math.sqrt(float(g @ g) * float(e @ e))
        if denom > 0.0:
            out[i] = float(g @ e) / denom
    return out


def parabolic_peak(c_left: float, c_peak: float, c_right: float) -> float:
    """Offset in [−0.5, 0.5] steps of the vertex of the parabola through three equally spaced
    samples around a maximum (J. O. Smith, SASP, quadratic peak interpolation); 0 when the three
    do not form a peak."""
    denom = c_left - 2.0 * c_peak + c_right
    if not (math.isfinite(denom) and denom < 0.0):
        return 0.0
    return float(np.clip(0.5 * (c_left - c_right) / denom, -0.5, 0.5))


def evaluate_sync(path: str | Path, max_lag_ms: float = 400.0) -> SyncReport:
    """Measure the audio/video offset of a talking-face recording.

    Args:
        path: a media file with a video stream showing one face and an audio stream of its
            voice (any container and codecs FFmpeg decodes; MP4 with H.264 + AAC here).
        max_lag_ms: largest offset searched either way, milliseconds (> 0); the result is
            within ±max_lag_ms, at the boundary when the true offset is beyond it.

    Returns:
        ``SyncReport``: offset in ms (positive = mouth lags the voice), the correlation at the
        best lag, frame counts, measured fps and the audio duration.

    Raises:
        ValueError: ``max_lag_ms`` not positive; the file is missing or not decodable (one
            line naming the file); no video or no audio stream; video, audio or their overlap
            shorter than ``MIN_SECONDS``; a frame without a timestamp; no face in any frame;
            a mouth that never moves or audio that is silent (nothing to correlate).

    The audio is taken as one contiguous run from its first frame's time (gaps inside the
    audio stream are not re-timed).
    """
    if not (max_lag_ms > 0.0 and math.isfinite(max_lag_ms)):
        raise ValueError(f"max_lag_ms must be a positive number, got {max_lag_ms}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such file: {p}")
    dec = _decode(p)
    frames = int(dec.frame_times.size)
    missing = int(np.isnan(dec.gaps).sum())
    audio_seconds = dec.audio.size / SAMPLE_RATE

    times = dec.frame_times
    steps = np.diff(times)
    steps = steps[steps > 0]
    if steps.size == 0:
        raise ValueError(f"{p}: too short to judge ({frames} video frame(s))")
    frame_s = float(np.median(steps))
    fps = 1.0 / frame_s
    video_seconds = float(times[-1] - times[0]) + frame_s
    if video_seconds < MIN_SECONDS or audio_seconds < MIN_SECONDS:
        raise ValueError(f"{p}: too short to judge (video {video_seconds:.2f} s, audio "
                         f"{audio_seconds:.2f} s; need {MIN_SECONDS:g} s of each)")
    if missing == frames:
        raise ValueError(f"{p}: no face found in any of the {frames} video frames")
    gaps = _fill_missing(dec.gaps)

    # A frame is on screen until the next one: its mid-time is pts + half that interval.
    durations = np.append(np.diff(times), frame_s)
    mid = times + 0.5 * durations
    env = audio_envelope(dec.audio)
    grid = dec.audio_start + np.arange(env.size) * HOP_S
    inside = (grid >= mid[0]) & (grid <= mid[-1])
    if inside.sum() * HOP_S < MIN_SECONDS:
        raise ValueError(f"{p}: audio and video overlap by {inside.sum() * HOP_S:.2f} s; "
                         f"need {MIN_SECONDS:g} s to judge")
    gap = np.full(env.size, np.nan)
    gap[inside] = np.interp(grid[inside], mid, gaps)
    if np.ptp(gap[inside]) <= 1e-9:
        raise ValueError(f"{p}: the mouth does not move; nothing to correlate")
    if np.ptp(env[inside]) <= 1e-9:
        raise ValueError(f"{p}: the audio is silent; nothing to correlate")

    max_lag = max(1, round(float(max_lag_ms) / (HOP_S * 1000.0)))
    corr = lagged_correlation(gap, env, max_lag,
                              min_overlap=round(MIN_OVERLAP_S / HOP_S))
    if not np.isfinite(corr).any():
        raise ValueError(f"{p}: no lag within ±{max_lag_ms:g} ms has enough overlap to judge")
    best = int(np.nanargmax(corr))
    frac = 0.0
    if 0 < best < corr.size - 1:
        frac = parabolic_peak(corr[best - 1], corr[best], corr[best + 1])
    offset_ms = (best - max_lag + frac) * HOP_S * 1000.0
    return SyncReport(
        av_offset_ms=float(offset_ms),
        corr=float(corr[best]),
        frames=frames,
        frames_without_face=missing,
        fps=fps,
        audio_seconds=float(audio_seconds),
    )
