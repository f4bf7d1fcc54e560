"""``facecast bench latency``: end-to-end latency, A/V offset and capacity over real WebRTC.

Starts ``facecast serve`` as a child process on loopback, connects N aiortc client peers
(``runtime.serve.client.AvatarClient``), and pushes real speech (the held-out Asterisk prompts) through
``audio`` messages in real time, 20 ms per message, with 0.6–1.2 s of silence between prompts.
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
  ``av_offset_end_ms``); these depend on what was said in each window. ``av_clock_drift_ms`` measures drift without content: how much the video stream's
  pts-to-arrival lag changed against the audio stream's from the first to the last 60 s
  (``clock_drift_ms``).
* delivered fps and frames missing (pts gaps) per session; the server's dropped frames and
  ``late_ticks`` (``/healthz``); the server process's CPU % (utime + stime over wall time, from
  ``/proc``), RSS at the start and the end (after warm-up) and their difference, and on runs
  over 90 s also from the 60 s mark on (``rss_growth_after_60s_mb``: the first minute holds
  one-off allocations, ONNX Runtime's arenas among them, that level off).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en")
HELDOUT = resources.files("runtime.evals") / "heldout.txt"
"""The held-out Asterisk prompt list (package data; the same file training excludes)."""
CHUNK_S = 0.02
WARMUP_S = 3.0
"""Seconds of idle received before speech starts (the baseline of the mouth-motion detector)."""
MOTION_FACTOR = 2.0
"""Mouth-opening threshold as a multiple of the idle noise (99th percentile); see module doc."""
MOTION_FLOOR = 1.0
"""Least darkness rise (grey levels, 0–255) counted as opening, whatever the idle noise."""
MOTION_GAP = 5
"""Frames between an idle frame and its reference when measuring idle noise (200 ms at 25 fps:
about the time from onset to the first mouth motion, so head drift over that span counts)."""


def heldout_prompts(limit: int | None = None) -> list[Path]:
    """Held-out Asterisk prompts (``runtime/evals/heldout.txt``) that exist on this machine,
    skipping single digits/letters; raises FileNotFoundError if there are none."""
    names: list[str] = []
    if HELDOUT.is_file():
        names = [ln.strip() for ln in HELDOUT.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
    paths = [ASTERISK_DIR / f"{n}.g722" for n in names
             if not n.startswith(("digits/", "letters/", "phonetic/"))]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise FileNotFoundError("no held-out Asterisk prompts found: apt-get install "
                                "asterisk-core-sounds-en-g722")
    return paths[:limit] if limit else paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds utime+stime, RSS MiB) of a process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def mouth_box(avatar_name: str = "default") -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) full-image pixels around the avatar's lips, extended down by 0.25 IOD
    for the opening jaw."""
    import avatars
    from avatars import topology as T
    from avatars.rig import Rig
    from runtime.compositor import Compositor

    av_ = avatars.load(avatar_name)
    rig = Rig.for_avatar(av_, 256)
    lips = sorted({i for pair in T.CENTRAL_INNER_LIP_PAIRS for i in pair} | {61, 291})
    pts = Compositor(av_, 256).crop_to_image(rig.neutral[lips, :2])
    iod = rig.iod * av_.crop_box[2] / 256
    x0, y0 = pts.min(axis=0) - np.array([0.05, 0.08]) * iod
    x1, y1 = pts.max(axis=0) + np.array([0.05, 0.25]) * iod
    return int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))


def _darkness(frame: np.ndarray) -> float:
    grey = frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114
    return float(255.0 - grey.mean())


def _timeline(entries: list, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """pts (in ``rate`` units) → arrival seconds through a least-squares line; returns
    (pts seconds, mapped time)."""
    arrival = np.array([e[0] for e in entries])
    pts = np.array([float(e[1]) for e in entries]) / rate
    a, b = np.polyfit(pts, arrival, 1)
    return pts, a * pts + b


def audio_on_pts(audio: list) -> tuple[np.ndarray, int]:
    """Received audio frames laid out on their own pts, so a lost or dropped frame leaves a gap
    instead of pulling everything after it earlier (concatenating frames would shift the voice
    20 ms per missing frame and read as the mouth lagging by as much).

    Args:
        audio: (arrival s, pts in 1/48000 s, float32 [n] samples at 48 kHz) per received
            frame, in arrival order (``Received.audio``; Opus's RTP clock is 48 kHz).

    Returns:
        (float32 [N] samples from the first frame's pts on, zeros where nothing arrived; the
        number of samples missing inside that span). A frame whose pts repeats an earlier
        one's overwrites it.
    """
    if not audio:
        return np.zeros(0, np.float32), 0
    first = int(audio[0][1])
    end = max(int(p) - first + len(x) for _t, p, x in audio)
    out = np.zeros(end, np.float32)
    filled = np.zeros(end, bool)
    for _t, p, x in audio:
        i = int(p) - first
        if i < 0:
            continue
        out[i:i + len(x)] = x
        filled[i:i + len(x)] = True
    return out, int(end - filled.sum())


def _offset(video_t: np.ndarray, mouth: np.ndarray, audio_t: np.ndarray,
            audio: np.ndarray, t0: float, t1: float) -> tuple[float, float]:
    """Offset (ms, positive = mouth lags) and correlation in the window [t0, t1).

    Args:
        video_t: float64 [n] time of each video frame (monotonic s), mouth: float [n] its
            mouth-box darkness.
        audio_t: float64 [m] time of each received audio frame; only ``audio_t[0]`` is used:
            ``audio`` starts there, one sample per 1/48000 s (``audio_on_pts``).
        audio: float32 [N] the received voice at 48 kHz, laid out on its pts.
        t0, t1: the window, monotonic s.
    """
    from runtime.evals.sync import audio_envelope, lagged_correlation, parabolic_peak

    hop = 0.01
    grid = np.arange(t0, t1, hop)
    env_all = audio_envelope(audio, 48000, hop)
    env = np.interp(grid, audio_t[0] + np.arange(len(env_all)) * hop, env_all,
                    left=np.nan, right=np.nan)
    gap = np.interp(grid, video_t, mouth, left=np.nan, right=np.nan)
    c = lagged_correlation(gap, env, 40, 100)
    if not np.isfinite(c).any():
        return float("nan"), float("nan")
    i = int(np.nanargmax(c))
    frac = parabolic_peak(c[i - 1], c[i], c[i + 1]) if 0 < i < len(c) - 1 else 0.0
    return round((i - 40 + frac) * hop * 1000, 1), round(float(c[i]), 3)


async def _drive(client, prompts: list[tuple[str, np.ndarray, int]], seconds: float,
                 rng: np.random.Generator, onsets: list[float]) -> None:
    """Push prompts in real time until ``seconds`` have passed."""
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        name, audio, rate = prompts[k % len(prompts)]
        k += 1
        step = int(CHUNK_S * rate)
        env = np.array([np.sqrt(np.mean(audio[i:i + rate // 100] ** 2) + 1e-12)
                        for i in range(0, len(audio), rate // 100)])
        onset = int(np.argmax(20 * np.log10(env) > 20 * np.log10(env.max()) - 30)) * (rate // 100)
        start = time.monotonic()
        uid = f"p{k}"
        for n, i in enumerate(range(0, len(audio), step)):
            due = start + n * CHUNK_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if i <= onset < i + step:
                onsets.append((time.monotonic(), start + len(audio) / rate + 0.5, name))
            await client.send_audio(audio[i:i + step], rate, uid)
        await client.send({"type": "audio_end", "id": uid})
        await asyncio.sleep(len(audio) / rate - (time.monotonic() - start) + rng.uniform(0.6, 1.2))


def mouth_latencies(darkness: np.ndarray, arrivals: np.ndarray,
                    onsets: list[tuple[float, float, str]]) -> list[float]:
    """Onset → first frame whose mouth opens, in ms, per prompt (NaN: none before the prompt's
    end; see the module docstring).

    Args:
        darkness: float [n] mouth-box darkness per received frame (``_darkness``), in arrival
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


def voice_latencies(audio: list, onsets: list[tuple[float, float, str]]) -> list[float]:
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


def clock_drift_ms(video: list[tuple[float, int]], audio: list[tuple[float, int]],
                   t0: float, t1: float, window: float = 60.0) -> float:
    """Change of the video track's timing against the audio track's between the first and the
    last ``window`` seconds of [t0, t1), ms (positive: video fell behind).

    Each track's lag is wire arrival − pts time (video pts at 90 kHz, audio at 48 kHz, as RTP
    carries them); the median of (video lag − audio lag) is taken in each window. The tracks'
    RTP origins are arbitrary, so only the change means anything: how far one stream's clock
    drifted from the other's. Content-free, unlike the cross-correlation offsets.

    Args:
        video, audio: (wire arrival s, pts) per received frame.
    """
    v = np.array([(t, p / 90000.0) for t, p in video])
    a = np.array([(t, p / 48000.0) for t, p in audio])
    w = min(window, (t1 - t0) / 2)

    def rel(lo: float, hi: float) -> float:
        vs = v[(v[:, 0] >= lo) & (v[:, 0] < hi)]
        as_ = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
        if not len(vs) or not len(as_):
            return float("nan")
        return float(np.median(vs[:, 0] - vs[:, 1]) - np.median(as_[:, 0] - as_[:, 1]))

    return round((rel(t1 - w, t1) - rel(t0, t0 + w)) * 1000, 1)


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
                  avatar: str = "default", backend: str = "auto") -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready figures (see the module docstring)."""
    from runtime.audio.decode import load_audio

    prompts = [(p.stem, *load_audio(p)) for p in heldout_prompts()]
    prompts = [(n, a, r) for n, a, r in prompts if 1.0 <= len(a) / r <= 5.0][:24]  # sentences
    box = mouth_box(avatar)
    from runtime.bench.soak import serve_process  # the one way benches start a server

    port = _free_port()
    with serve_process(port, size, avatar, backend,
                       extra=("--max-sessions", str(max(4, sessions)))) as proc:
        return asyncio.run(_run(port, proc.pid, sessions, seconds, prompts, box))


async def _run(port: int, pid: int, n_sessions: int, seconds: float, prompts: list,
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
    cpu0, rss0 = _proc_stats(pid)
    wall0 = time.monotonic()
    onsets = [[] for _ in clients]
    rng = np.random.default_rng(0)
    rss_trace: list[tuple[float, float]] = []

    async def sample_rss() -> None:
        while True:
            rss_trace.append((time.monotonic() - wall0, _proc_stats(pid)[1]))
            await asyncio.sleep(5.0)

    sampler = asyncio.get_running_loop().create_task(sample_rss())
    await asyncio.gather(*(_drive(c, prompts, seconds, rng, o) for c, o in zip(clients, onsets)))
    await asyncio.sleep(1.5)
    sampler.cancel()
    cpu1, rss1 = _proc_stats(pid)
    wall1 = time.monotonic()
    health = _get_json(f"http://127.0.0.1:{port}/healthz")
    per_session, per_prompt = [], []
    for c, onset_times in zip(clients, onsets):
        r = c.received
        dark = np.array([_darkness(f) for f in r.frames])
        arrivals = np.array([t for t, _p, _tb in r.video])
        # the wire clock (see ``Received``): what the server sent, before the aiortc receiver's
        # unequal audio/video buffering
        wire_v = [(r.wire.get(("video", p), t), p) for t, p, _tb in r.video]
        wire_a = [(r.wire.get(("audio", p), t), p) for t, p, _x in r.audio]
        v_pts, v_t = _timeline(wire_v, 90000.0)
        _a_pts, a_t = _timeline(wire_a, 48000.0)
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
        off, corr = _offset(v_t + 0.02, dark, a_t, audio, wall0, wall1)
        off0, _ = _offset(v_t + 0.02, dark, a_t, audio, wall0, min(wall1, wall0 + 60))
        off1, _ = _offset(v_t + 0.02, dark, a_t, audio, max(wall0, wall1 - 60), wall1)
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
