"""``facecast bench latency``: end-to-end latency, A/V offset and capacity over real WebRTC.

Starts ``facecast serve`` as a child process on loopback, connects N aiortc client peers
(``runtime.serve.client.AvatarClient``), and pushes real speech (the held-out Asterisk prompts)
through ``audio`` messages in real time, 20 ms per message, with 0.6–1.2 s of silence between
prompts (``runtime.bench.harness``: the server process, the speech, the received streams).
On the received side it measures:

* ``onset_to_mouth_ms``: from sending the chunk that holds a prompt's speech onset (first 10 ms
  window within 30 dB of the prompt's peak) to the arrival of the first video frame whose mouth
  opens. "Opens" is judged from pixels only, in a box around the avatar's lips (``mouth_box``,
  room for head motion): the box's mean darkness (the open mouth shows the dark cavity; the mean
  barely changes when the head shifts the lips inside the box) rises above its mean over the 3
  frames received before the onset by more than ``MOTION_FACTOR`` × the 99th percentile of the
  same measure at idle (a frame against frames 5 earlier, over ``WARMUP_S`` of idle before speech:
  head drift, breathing and codec noise), and at least ``MOTION_FLOOR``. Searched until the
  prompt's end (+0.5 s); prompts whose mouth never opens in that window are counted in
  ``missed``. Median and p95 over all prompts and sessions. The figure includes how soon each
  prompt's first sounds open the mouth at all: a lightly articulated first syllable ("the …")
  opens it late even with no system delay (``per_prompt`` shows it prompt by prompt).
* ``voice_latency_ms``: from the same onset chunk to the arrival of the first received 20 ms
  audio frame within 35 dB of the received peak.
* Arrival is when a frame's last RTP packet reached the receiving peer (``Received.wire``): the
  earliest it can be decoded and shown. ``*_released_ms`` report the same latencies at the time
  aiortc's receiver hands the decoded frame over: its jitter buffer holds a video frame until the
  first packet of the next frame arrives (one frame period more) and prefetches 4 audio packets
  (80 ms more); a browser's receiver does neither.
* ``av_offset_ms``: receiver-side offset of mouth darkness against the received voice's envelope
  by cross-correlation (``runtime.evals.sync``), each track's timeline taken from its pts mapped to
  wire arrival time (``runtime.serve.client.Received.wire``) by a least-squares line (removes
  network/decoder jitter, keeps the tracks' relative timing as sent). Positive: the mouth lags
  the voice. Also over the first and the last 60 s (``av_offset_start_ms``,
  ``av_offset_end_ms``); these depend on what was said in each window. ``av_clock_drift_ms``
  measures drift without content: how much the video stream's pts-to-arrival lag changed
  against the audio stream's from the first to the last 60 s (``harness.clock_drift_ms``).
* delivered fps and frames missing (pts gaps) per session; the server's dropped frames and
  ``late_ticks`` (``/healthz``); the server process's CPU % (utime + stime over wall time, from
  ``/proc``), RSS at the start and the end (after warm-up) and their difference, and on runs
  over 90 s also from the 60 s mark on (``rss_growth_after_60s_mb``: the first minute holds
  one-off allocations, ONNX Runtime's arenas among them, that level off).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from runtime.bench.harness import (
    AUDIO_RTP_RATE,
    VIDEO_RTP_RATE,
    WARMUP_S,
    Onset,
    Prompt,
    audio_on_pts,
    av_offset,
    clock_drift_ms,
    darkness,
    free_port,
    get_json,
    mouth_box,
    proc_stats,
    pts_timeline,
    sentence_prompts,
    serve_process,
    speak_prompts,
    wire_arrivals,
)

MOTION_FACTOR = 2.0
"""Mouth-opening threshold as a multiple of the idle noise (99th percentile); see module doc."""
MOTION_FLOOR = 1.0
"""Least darkness rise (grey levels, 0–255) counted as opening, whatever the idle noise."""
MOTION_GAP = 5
"""Frames between an idle frame and its reference when measuring idle noise (200 ms at 25 fps:
about the time from onset to the first mouth motion, so head drift over that span counts)."""


def mouth_latencies(darkness: np.ndarray, arrivals: np.ndarray,
                    onsets: list[Onset]) -> list[float]:
    """Onset → first frame whose mouth opens, in ms, per prompt (NaN: none before the prompt's
    end; see the module docstring).

    Args:
        darkness: float [n] mouth-box darkness per received frame (``harness.darkness``), in arrival
            order.
        arrivals: float64 [n] arrival time of each frame (``time.monotonic`` seconds).
        onsets: (onset send time s, prompt end time s, prompt name) per prompt.

    Raises:
        RuntimeError: fewer than 10 idle frames before the first onset (no noise estimate).
    """
    idle_end = onsets[0][0] if onsets else np.inf
    idle = [i for i in range(MOTION_GAP + 3, len(darkness)) if arrivals[i] < idle_end]
    if len(idle) < 10:
        raise RuntimeError("too little idle video before speech to measure the noise")
    noise = [abs(darkness[i] - darkness[i - MOTION_GAP - 2:i - MOTION_GAP + 1].mean())
             for i in idle]
    threshold = max(MOTION_FACTOR * float(np.percentile(noise, 99)), MOTION_FLOOR)
    out = []
    for t_on, t_end, _name in onsets:
        i0 = int(np.searchsorted(arrivals, t_on))
        base = float(darkness[max(0, i0 - 3):max(i0, 1)].mean())
        hit = next((i for i in range(i0, len(darkness)) if arrivals[i] <= t_end
                    and darkness[i] - base > threshold), None)
        out.append(np.nan if hit is None else (arrivals[hit] - t_on) * 1000)
    return out


def voice_latencies(audio: list, onsets: list[Onset]) -> list[float]:
    """Onset → arrival of the first received audio frame within 35 dB of the received peak, ms,
    per prompt (NaN: none before the prompt's end).

    Args:
        audio: (arrival s, pts, float32 [n] samples) per received frame.
        onsets: (onset send time s, prompt end time s, prompt name) per prompt.
    """
    arrivals = np.array([t for t, _p, _x in audio])
    level = np.array([10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12)
                      for _t, _p, x in audio])
    loud = level > level.max() - 35.0
    out = []
    for t_on, t_end, _name in onsets:
        hit = np.flatnonzero((arrivals >= t_on) & (arrivals <= t_end) & loud)
        out.append((arrivals[hit[0]] - t_on) * 1000 if len(hit) else np.nan)
    return out


def _ms(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 1)


def _summary(per_prompt: list[dict], key: str) -> dict:
    """Median, p95, count and misses of one per-prompt latency."""
    x = np.array([p[key] for p in per_prompt if p[key] is not None], dtype=np.float64)
    if not len(x):
        return {"median": None, "p95": None, "n": 0, "missed": len(per_prompt)}
    return {"median": round(float(np.median(x)), 1), "p95": round(float(np.percentile(x, 95)), 1),
            "n": len(x), "missed": len(per_prompt) - len(x)}


def bench_latency(sessions: int = 1, seconds: float = 30.0, size: int = 256,
                  avatar: str = "default", backend: str = "auto",
                  watermark: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready figures (see the module docstring).

    Args:
        sessions: concurrent client peers (each a session of the server).
        seconds: how long the peers push speech, after ``WARMUP_S`` of idle.
        size, avatar, backend: passed to ``facecast serve``.
        watermark: False serves with ``--no-watermark`` (to measure what the mark costs).

    Raises:
        FileNotFoundError: no held-out Asterisk prompts (``asterisk-core-sounds-en-g722``).
        RuntimeError: the server did not start (a backend it cannot run among the causes).
    """
    prompts = sentence_prompts()
    box = mouth_box(avatar)
    port = free_port()
    with serve_process(port, size, avatar, backend,
                       extra=("--max-sessions", str(max(4, sessions)),
                              *(() if watermark else ("--no-watermark",)))) as proc:
        return asyncio.run(_run(port, proc.pid, sessions, seconds, prompts, box))


async def _run(port: int, pid: int, n_sessions: int, seconds: float, prompts: list[Prompt],
               box: tuple[int, int, int, int]) -> dict[str, Any]:
    from runtime.serve.client import AvatarClient

    url = f"ws://127.0.0.1:{port}/ws"
    clients = [AvatarClient(url, keep_frames=True, frame_region=box) for _ in range(n_sessions)]
    for c in clients:
        await c.__aenter__()
        await c.start_media()
    for c in clients:
        await c.wait_video(25, timeout=30)
    await asyncio.sleep(WARMUP_S)  # warm-up: idle baseline
    cpu0, rss0 = proc_stats(pid)
    wall0 = time.monotonic()
    onsets = [[] for _ in clients]
    rng = np.random.default_rng(0)
    rss_trace: list[tuple[float, float]] = []

    async def sample_rss() -> None:
        while True:
            rss_trace.append((time.monotonic() - wall0, proc_stats(pid)[1]))
            await asyncio.sleep(5.0)

    sampler = asyncio.get_running_loop().create_task(sample_rss())
    await asyncio.gather(*(speak_prompts(c, prompts, seconds, rng, o)
                           for c, o in zip(clients, onsets)))
    await asyncio.sleep(1.5)
    sampler.cancel()
    cpu1, rss1 = proc_stats(pid)
    wall1 = time.monotonic()
    health = get_json(f"http://127.0.0.1:{port}/healthz")
    per_session, per_prompt = [], []
    for c, onset_times in zip(clients, onsets):
        r = c.received
        dark = np.array([darkness(f) for f in r.frames])
        arrivals = np.array([t for t, _p, _tb in r.video])
        wire_v, wire_a = wire_arrivals(r)  # what the server sent, before aiortc's buffering
        v_pts, v_t = pts_timeline(wire_v, VIDEO_RTP_RATE)
        _a_pts, a_t = pts_timeline(wire_a, AUDIO_RTP_RATE)
        audio, audio_missing = audio_on_pts(r.audio)
        drift = clock_drift_ms(wire_v, wire_a, wall0, wall1)
        wire_v_t = np.array([t for t, _p in wire_v])
        wire_audio = [(t, p, x) for (t, p), (_r, _p, x) in zip(wire_a, r.audio)]
        for (_t, _e, name), m, v, m_rel, v_rel in zip(
                onset_times, mouth_latencies(dark, wire_v_t, onset_times),
                voice_latencies(wire_audio, onset_times),
                mouth_latencies(dark, arrivals, onset_times),
                voice_latencies(r.audio, onset_times)):
            per_prompt.append({"prompt": name, "mouth_ms": _ms(m), "voice_ms": _ms(v),
                               "mouth_released_ms": _ms(m_rel), "voice_released_ms": _ms(v_rel)})
        steps = np.diff(v_pts) * 25.0
        span = arrivals[-1] - arrivals[0]
        off, corr = av_offset(v_t + 0.02, dark, a_t, audio, wall0, wall1)
        off0, _ = av_offset(v_t + 0.02, dark, a_t, audio, wall0, min(wall1, wall0 + 60))
        off1, _ = av_offset(v_t + 0.02, dark, a_t, audio, max(wall0, wall1 - 60), wall1)
        per_session.append({
            "frames": len(r.video),
            "delivered_fps": round(len(r.video) / span, 2) if span > 0 else 0.0,
            "frames_missing": int(np.sum(np.maximum(np.round(steps) - 1, 0))),
            "audio_missing_ms": round(audio_missing / 48.0, 1),
            "av_offset_ms": off, "av_corr": corr,
            "av_offset_start_ms": off0, "av_offset_end_ms": off1,
            "av_clock_drift_ms": drift,
            "utterances": len(onset_times),
        })
    for c in clients:
        await c.close()
    offsets = [s["av_offset_ms"] for s in per_session]
    later = [m for t, m in rss_trace if t >= 60.0]
    rss_60 = round(later[0], 1) if later and wall1 - wall0 > 90 else None
    return {
        "sessions": n_sessions, "seconds": round(wall1 - wall0, 1),
        "onset_to_mouth_ms": _summary(per_prompt, "mouth_ms"),
        "voice_latency_ms": _summary(per_prompt, "voice_ms"),
        "onset_to_mouth_released_ms": _summary(per_prompt, "mouth_released_ms"),
        "voice_latency_released_ms": _summary(per_prompt, "voice_released_ms"),
        "av_offset_ms": round(float(np.median(offsets)), 1),
        "delivered_fps_min": min(s["delivered_fps"] for s in per_session),
        "per_session": per_session,
        "per_prompt": per_prompt,
        "server": {"cpu_percent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
                   "rss_start_mb": round(rss0, 1), "rss_end_mb": round(rss1, 1),
                   "rss_growth_mb": round(rss1 - rss0, 1),
                   "rss_after_60s_mb": rss_60,
                   "rss_growth_after_60s_mb": None if rss_60 is None else round(rss1 - rss_60, 1),
                   "rss_max_mb": round(max([rss1] + [m for _t, m in rss_trace]), 1),
                   "late_ticks": health.get("late_ticks"), "backend": health.get("backend"),
                   "size": health.get("size")},
    }
