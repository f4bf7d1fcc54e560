"""``facecast bench soak``: a long run of one session that speaks and idles in turns, with
reconnects, checking that nothing leaks, stalls or drifts.

Starts ``facecast serve`` as a child process on loopback (like ``facecast bench latency``) and
keeps one aiortc client peer (``runtime.serve.client.AvatarClient``) connected. Every
``reconnect_every`` seconds the client closes and a new one connects (a new session, a new
WebRTC peer). Within each connection the client speaks (the held-out Asterisk prompts, pushed in
real time through ``audio`` messages, 20 ms each: ``harness.speak_prompts``) for two
thirds of a turn and stays silent (the avatar idles) for the last third; a turn is
``min(30 s, reconnect_every)``.

Reported (one JSON object):

* ``frames``: video frames delivered, frames expected at the server's fps over the connected time,
  ``missing`` (gaps in the received pts), ``audio_missing_ms`` (gaps in the received audio pts);
* ``stalls``: gaps over 2 s between received video frames inside a connection
  (``video_gaps_over_2s``, with the longest gap), the server's watchdog restarts
  (``runtime.live.scheduler``; from ``/healthz``), and how often ``/healthz`` said ``stalled``;
* ``reconnections``: how many, the time from opening the WebSocket to the first video frame
  (median, max), attempts that failed (retried after 2 s; five in a row end the run) and
  connections that dropped while in use;
* ``av``: A/V offset by cross-correlation of the mouth's darkness against the voice's envelope on
  the received streams (``harness.av_offset``, positive when the mouth lags) over the first and
  the last 60 s of speech (first and last connection), their difference, and the content-free
  clock drift of video against audio within each connection (``harness.clock_drift_ms``);
* ``server``: RSS (MiB), open file descriptors (``/proc/PID/fd``) and threads
  (``/proc/PID/status``) at the start (first connection up and warmed up) and at the end (last
  connection still up, after its last turn), with the differences; on runs over 90 s also the RSS
  growth from the 60 s mark on (``rss_growth_after_60s_mb``: the first minute holds one-off
  allocations that level off); a trace every minute.

Everything is measured on the received side or from ``/proc``; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bench.harness import (
    AUDIO_RTP_RATE,
    VIDEO_RTP_RATE,
    WARMUP_S,
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

STALL_GAP_S = 2.0
"""A gap between received video frames longer than this is a stall."""
TURN_S = 30.0
"""Longest speak + idle turn, seconds (two thirds speaking, one third idle)."""
OFFSET_WINDOW_S = 60.0
"""Window of the start and end A/V offsets, seconds."""
DEFAULT_RECONNECT_S = 180.0
"""Seconds between reconnects by default ("every few minutes")."""


def proc_resources(pid: int) -> dict[str, float]:
    """A process's RSS (MiB), open file descriptors and threads, from /proc.

    Raises:
        FileNotFoundError: no such process (or not Linux).
    """
    _cpu, rss = proc_stats(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return {"rss_mb": round(rss, 1), "fds": fds, "threads": threads}


def _health(port: int) -> dict:
    """``/healthz`` as a dict, also when it answers 503 (stalled); {} if unreachable."""
    import json
    import urllib.error

    try:
        return get_json(f"http://127.0.0.1:{port}/healthz")
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return {"status": "error"}
    except OSError:
        return {}


def connection_figures(client, t0: float, t1: float, fps: float = 25.0) -> dict[str, Any]:
    """What one connection's client received between ``t0`` and ``t1`` (monotonic s).

    Args:
        client: an ``AvatarClient`` that kept its frames (mouth-box crops).
        t0, t1: the connection's measured span. fps: the server's frame rate.

    Returns: frames (received in [t0, t1]), missing (pts gaps there, in frames), gaps over
    ``STALL_GAP_S`` between received frames and the longest gap (s), A/V offset and correlation
    over the whole connection and over its first and last ``OFFSET_WINDOW_S`` (ms; None without
    speech or frames), the video/audio clock drift within it (ms), and the received audio
    missing in its pts (ms; the voice is laid out on its pts for the offsets,
    ``harness.audio_on_pts``).
    """
    r = client.received
    inside = [(t, p, tb) for t, p, tb in r.video if t0 <= t <= t1]
    out: dict[str, Any] = {"frames": len(inside), "missing": 0, "gaps_over_2s": 0,
                           "longest_gap_s": None, "av_offset_ms": None, "av_corr": None,
                           "av_offset_first_ms": None, "av_offset_last_ms": None,
                           "av_clock_drift_ms": None, "audio_missing_ms": None}
    if len(inside) < 2:
        return out
    arrivals = np.array([t for t, _p, _tb in inside])
    gaps = np.diff(np.concatenate([[t0], arrivals, [t1]]))  # a stall at either end counts too
    steps = np.diff([float(p * tb) for _t, p, tb in inside]) * fps
    out["missing"] = int(np.sum(np.maximum(np.round(steps) - 1, 0)))
    out["gaps_over_2s"] = int(np.sum(gaps > STALL_GAP_S))
    out["longest_gap_s"] = round(float(gaps.max()), 3)
    if not r.audio or len(r.frames) != len(r.video) or len(r.audio) < 10:
        return out
    wire_v, wire_a = wire_arrivals(r)
    _v_pts, v_t = pts_timeline(wire_v, VIDEO_RTP_RATE)
    _a_pts, a_t = pts_timeline(wire_a, AUDIO_RTP_RATE)
    dark = np.array([darkness(f) for f in r.frames])
    audio, audio_missing = audio_on_pts(r.audio)
    out["audio_missing_ms"] = round(audio_missing / 48.0, 1)

    def offset(lo: float, hi: float) -> tuple[float | None, float | None]:
        if hi - lo < 4.0:
            return None, None
        off, corr = av_offset(v_t + 0.5 / fps, dark, a_t, audio, lo, hi)
        return (None, None) if not np.isfinite(off) else (off, corr)

    out["av_offset_ms"], out["av_corr"] = offset(t0, t1)
    out["av_offset_first_ms"], _ = offset(t0, min(t1, t0 + OFFSET_WINDOW_S))
    out["av_offset_last_ms"], _ = offset(max(t0, t1 - OFFSET_WINDOW_S), t1)
    drift = clock_drift_ms(wire_v, wire_a, t0, t1)
    out["av_clock_drift_ms"] = None if not np.isfinite(drift) else drift
    return out


def bench_soak(minutes: float = 60.0, reconnect_every: float = DEFAULT_RECONNECT_S,
               size: int = 256, avatar: str = "default", backend: str = "auto",
               log_path: Path | None = None) -> dict[str, Any]:
    """Run the soak for ``minutes`` of connected time (after the first warm-up); returns the
    JSON-ready figures described in the module docstring.

    Args:
        minutes: length of the run (fractions allowed, e.g. 0.3 for a test).
        reconnect_every: seconds between reconnects (≥ 5).
        size, avatar, backend: passed to ``facecast serve``.
        log_path: append the server's stderr (its log) here; None discards it.

    Raises:
        ValueError: ``minutes`` ≤ 0 or ``reconnect_every`` < 5.
        FileNotFoundError: no held-out Asterisk prompts (``asterisk-core-sounds-en-g722``).
        RuntimeError: the server did not start, or a connection produced no video.
    """
    if not minutes > 0:
        raise ValueError("--minutes must be positive")
    if reconnect_every < 5:
        raise ValueError("--reconnect-every must be at least 5 seconds")
    prompts = sentence_prompts()
    box = mouth_box(avatar)
    port = free_port()
    with serve_process(port, size, avatar, backend, log_path=log_path) as proc:
        return asyncio.run(_run(port, proc.pid, minutes * 60.0, reconnect_every, prompts, box))


async def _run(port: int, pid: int, seconds: float, reconnect_every: float, prompts: list[Prompt],
               box: tuple[int, int, int, int]) -> dict[str, Any]:
    from websockets.exceptions import WebSocketException

    from runtime.serve.client import AvatarClient

    url = f"ws://127.0.0.1:{port}/ws"
    rng = np.random.default_rng(0)
    fps = float(_health(port).get("fps", 25))
    restarts0 = int(_health(port).get("watchdog_restarts", 0))
    connections: list[dict] = []
    trace: list[dict] = []
    stalled_seen = 0
    start = end = None
    wall0 = time.monotonic()
    t_end = None
    k = 0
    first_video_ms: list[float] = []
    failures: list[dict] = []

    async def sample() -> None:
        nonlocal stalled_seen
        last_trace = -1e9
        while True:
            h = await asyncio.to_thread(_health, port)
            if h.get("status") == "stalled":
                stalled_seen += 1
            now = time.monotonic()
            if now - last_trace >= 60.0:
                last_trace = now
                trace.append({"t_s": round(now - wall0, 1), **proc_resources(pid),
                              "watchdog_restarts": h.get("watchdog_restarts")})
            await asyncio.sleep(2.0)

    sampler = None
    try:
        while t_end is None or time.monotonic() < t_end - 1.0:
            k += 1
            t_open = time.monotonic()
            client = AvatarClient(url, keep_frames=True, frame_region=box)
            try:
                await client.__aenter__()
                if client.ready.get("type") != "ready":
                    raise ConnectionError(f"refused: {client.ready}")
                await client.start_media()
                await client.wait_video(1, timeout=30)
            except (OSError, TimeoutError, ConnectionError, WebSocketException) as exc:
                # a reconnect that fails is a finding, not the end of the soak (the first one
                # is: the server does not work at all)
                await client.close()
                failures.append({"index": k, "t_s": round(time.monotonic() - wall0, 1),
                                 "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                if k == 1 or len(failures) >= 5 and all(
                        f["index"] > k - 5 for f in failures[-5:]):
                    raise RuntimeError(f"connection {k} failed: {exc}") from exc
                await asyncio.sleep(2.0)
                continue
            try:
                first_video_ms.append((time.monotonic() - t_open) * 1000)
                if k == 1:
                    await client.wait_video(25, timeout=30)
                    await asyncio.sleep(WARMUP_S)
                    start = proc_resources(pid)
                    wall0 = time.monotonic()
                    t_end = wall0 + seconds
                    sampler = asyncio.get_running_loop().create_task(sample())
                t0 = time.monotonic()
                t_stop = min(t_end, t0 + reconnect_every)
                turn = min(TURN_S, reconnect_every)
                error = None
                try:
                    while time.monotonic() < t_stop - 0.5:
                        left = t_stop - time.monotonic()
                        speak_s = min(turn * 2 / 3, left)
                        await speak_prompts(client, prompts, speak_s, rng, [])
                        idle_s = min(turn / 3, t_stop - time.monotonic())
                        if idle_s > 0:
                            await asyncio.sleep(idle_s)
                    await asyncio.sleep(0.5)  # the last frames in flight
                except (OSError, ConnectionError, WebSocketException) as exc:  # dropped under us
                    error = f"{type(exc).__name__}: {str(exc)[:200]}"
                t1 = time.monotonic()
                if t_end - t1 <= 1.0:  # the last connection: measure while it is still up
                    end = proc_resources(pid)
                figures = connection_figures(client, t0, t1, fps)
                figures.update({"index": k, "seconds": round(t1 - t0, 1),
                                "first_video_ms": round(first_video_ms[-1], 1)})
                if error is not None:
                    figures["dropped"] = error
                connections.append(figures)
            finally:
                await client.close()
                client.received.frames.clear()
    finally:
        if sampler is not None:
            sampler.cancel()
    await asyncio.sleep(0.5)
    health = _health(port)
    if end is None:
        end = proc_resources(pid)
    restarts = int(health.get("watchdog_restarts", 0)) - restarts0
    firsts = [c for c in connections if c["av_offset_first_ms"] is not None]
    lasts = [c for c in connections if c["av_offset_last_ms"] is not None]
    off0 = firsts[0]["av_offset_first_ms"] if firsts else None
    off1 = lasts[-1]["av_offset_last_ms"] if lasts else None
    drifts = [c["av_clock_drift_ms"] for c in connections if c["av_clock_drift_ms"] is not None]
    connected_s = sum(c["seconds"] for c in connections)
    # the first minute holds one-off allocations (ONNX Runtime arenas, codec pools) that level
    # off; growth after it is what a leak would show (as in bench latency)
    later = [e["rss_mb"] for e in trace if e["t_s"] >= 60.0]
    rss_60 = later[0] if later and time.monotonic() - wall0 > 90 else None
    delivered = sum(c["frames"] for c in connections)
    gaps = sum(c["gaps_over_2s"] for c in connections)
    longest = max([c["longest_gap_s"] or 0.0 for c in connections] or [0.0])
    return {
        "minutes": round((time.monotonic() - wall0) / 60.0, 2),
        "reconnect_every_s": reconnect_every,
        "frames": {"delivered": delivered, "expected": round(connected_s * fps),
                   "missing": sum(c["missing"] for c in connections),
                   "audio_missing_ms": round(sum(c["audio_missing_ms"] or 0.0
                                                 for c in connections), 1),
                   "delivered_fps": round(delivered / connected_s, 2) if connected_s else 0.0},
        "stalls": {"video_gaps_over_2s": gaps, "longest_video_gap_s": round(longest, 3),
                   "watchdog_restarts": restarts, "healthz_stalled_samples": stalled_seen,
                   "unrecovered": health.get("status") != "ok"},
        "reconnections": {"count": len(connections) - 1,
                          "failed_attempts": failures,
                          "dropped_connections": sum("dropped" in c for c in connections),
                          "first_video_ms_median": round(float(np.median(first_video_ms)), 1),
                          "first_video_ms_max": round(float(np.max(first_video_ms)), 1)},
        "av": {"offset_start_ms": off0, "offset_end_ms": off1,
               "offset_change_ms": None if off0 is None or off1 is None else
               round(off1 - off0, 1),
               "clock_drift_ms_max_abs": round(float(np.max(np.abs(drifts))), 1) if drifts
               else None},
        "server": {"start": start, "end": end,
                   "rss_growth_mb": round(end["rss_mb"] - start["rss_mb"], 1),
                   "rss_after_60s_mb": rss_60,
                   "rss_growth_after_60s_mb": None if rss_60 is None else
                   round(end["rss_mb"] - rss_60, 1),
                   "fds_change": end["fds"] - start["fds"],
                   "threads_change": end["threads"] - start["threads"],
                   "late_ticks": health.get("late_ticks"), "status": health.get("status"),
                   "backend": health.get("backend"), "size": health.get("size"),
                   "trace": trace},
        "connections": connections,
    }
