"""``facecast bench capacity``: how many live sessions this machine serves at full frame rate.

Everything ``facecast serve`` does for a session except the network, in this process on one
event loop: one renderer, one motion engine and one avatar state shared by N real
``runtime.live.session.Session`` s on the real ``runtime.live.scheduler.Scheduler`` (motion
model, behaviour, rig, one batched renderer call per tick, compositing, ``av`` frames), each
session fed speech without pause (the held-out Asterisk prompts, ``runtime.bench.harness``,
resampled to 48 kHz), and each session's two tracks read and encoded the way aiortc's
``RTCRtpSender`` does: ``await track.recv()``, then ``Vp8Encoder.encode`` / ``OpusEncoder.encode``
in the loop's default executor, one frame at a time per track (the encoders' own defaults: VP8
at aiortc's starting 500 kbit/s, as no receiver sends REMB here; Opus at 96 kbit/s). No client
peer is needed, so the figure is the server's own.

N is raised from 1. Each step starts clean (a fresh scheduler and fresh sessions), warms up for
``warmup_s`` and then measures for ``seconds``:

* ``fps_min`` / ``fps_mean``: video frames per second each session delivered, i.e. VP8-encoded
  (a frame the renderer skipped, or that its track's bounded queue dropped because encoding fell
  behind, is not delivered);
* ``tick_p50_ms`` / ``tick_p95_ms``: the scheduler's tick (worker time for every session's
  frame), over every tick of the window; ``late_ticks`` / ``ticks``: ticks that dropped their
  video because they started over a frame late, and all ticks;
* ``stage_ms_per_frame``: ``runtime.live.stages`` milliseconds per frame, ``encode_video`` /
  ``encode_audio`` included (timed around the encode call, in the executor thread). The
  frames are all sessions' frames the scheduler produced in the window (``frames``), those whose
  video a late tick dropped included: in a step that does not hold, ``render``, ``composite``
  and ``encode_video`` ran for only ``frames_rendered`` of them and read low;
* ``cpu_percent``: process CPU time over wall time × 100 (150 = 1.5 cores busy);
* ``rss_mb`` and ``rss_mb_per_session``: the process's RSS (MiB) at the end of the step, and
  (that − ``rss_mb_idle``) / N, where ``rss_mb_idle`` is measured before step 1 with
  everything loaded and warmed (a throwaway session ran 25 frames through the motion model,
  renderer and encoders, so one-off first-call allocations are not counted; ``rss_mb_loaded``
  is before that) and no session. It includes what grows with the renderer's batch (ONNX
  Runtime's arena) and the executor threads encoding.

A step holds when every session delivered at least ``HOLD_FPS_FRACTION`` of the frame rate
(24.5 fps at 25), the tick p95 is at most one frame period and at most ``MAX_LATE_FRACTION`` of
the ticks were late. The run stops at the first step that does not hold, or after
``max_sessions``; ``capacity`` is the largest N that held (0: not even one session).

The result is kept per machine (``capacity_path``, ``machine_key``: resolved backend, size, fps,
CPU model, usable cores, GPU model for GPU backends, hash of the renderer's weights), which is
what ``facecast serve --max-sessions auto`` reads (``load_capacity``) or measures
(``measure_capacity``, inside its running event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("facecast.bench.capacity")

HOLD_FPS_FRACTION = 0.98
"""Least delivered frame rate per session, as a fraction of the target, for a step to hold
(24.5 fps at 25)."""
MAX_LATE_FRACTION = 0.01
"""Most late ticks (video dropped) as a fraction of the step's ticks for a step to hold."""
TOP_UP_S = 2.0
"""A session's speech queue is topped up with the next prompt whenever it holds less than this
many seconds of audio."""
FEED_PERIOD_S = 0.1
"""Seconds between looks at the speech queues."""
STAGGER_S = 0.37
"""Session i starts speaking i × this many seconds after the step starts (and at prompt i), so
sessions do not say the same thing at the same moment."""
HASH_CHARS = 12
"""Hex digits of sha256 kept to name the renderer's weights."""


# --- where the figure is kept ------------------------------------------------------------
def capacity_path() -> Path:
    """The file measured capacities are kept in: ``$FACECAST_CACHE_DIR/capacity.json`` if set,
    else ``$XDG_CACHE_HOME/facecast/capacity.json`` (``~/.cache/facecast/capacity.json``)."""
    explicit = os.environ.get("FACECAST_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser() / "capacity.json"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "facecast" / "capacity.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` "model name"; ``platform.processor()`` or the
    machine type where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``: ``taskset`` counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_model() -> str | None:
    """The first NVIDIA GPU's model (``/proc/driver/nvidia/gpus/*/information``), or None."""
    with contextlib.suppress(OSError):
        for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
            for line in info.read_text(errors="replace").splitlines():
                if line.startswith("Model:"):
                    return " ".join(line.split(":", 1)[1].split())
    return None


_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: Path) -> str:
    """First ``HASH_CHARS`` hex digits of the file's sha256 (cached by path, size and mtime);
    "missing" when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()[:HASH_CHARS]
    return _HASHES[key]


def renderer_model_path(backend: str, size: int) -> Path:
    """The weights file a renderer of resolved backend ``backend`` (``NeuralRenderer.backend``)
    and side ``size`` loads: the torch checkpoint for "torch-…", else ``renderer_<size>.onnx``
    (TensorRT plans are built from it). Raises ValueError for a size without graphs."""
    from engines.renderer import CHECKPOINT, model_paths

    return CHECKPOINT if backend.startswith("torch") else model_paths(size)[1]


def machine_key(backend: str, size: int, fps) -> str:
    """What a measured capacity is valid for, as one string: the backend as the renderer
    resolved it (``NeuralRenderer.backend``, e.g. "onnxruntime-cpu"; not "auto"), the renderer
    side ``size`` (pixels), the frame rate (``runtime.clock.as_fps``: 25, "30000/1001"), the CPU
    model, the usable cores (``taskset`` changes it), the GPU model for GPU backends, and a short
    sha256 of the renderer's weights file (``renderer_model_path``). Raises ValueError for a bad
    fps or size."""
    from runtime.clock import as_fps

    parts = [backend, str(int(size)), f"{as_fps(fps)}fps", cpu_model(), f"{usable_cores()}cores"]
    if not backend.startswith(("onnxruntime-cpu", "torch-cpu")):
        parts.append(gpu_model() or "no-gpu")
    parts.append(file_hash(renderer_model_path(backend, size)))
    return "|".join(parts)


def _read_all(path: Path) -> dict[str, Any]:
    """The capacity file's key → report mapping; {} when missing, unreadable or malformed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_capacity(key: str, report: dict) -> Path:
    """Keep ``report`` (a ``measure_capacity`` result) under ``key`` (``machine_key``) in
    ``capacity_path()``, with ``measured_at`` (ISO 8601, UTC) added when it has none; other keys
    are kept (a corrupt file is replaced). Written atomically (temporary file, fsync,
    ``os.replace``). Returns the path. Raises OSError when the folder cannot be written."""
    path = capacity_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_all(path)
    entry = dict(report)
    entry.setdefault("measured_at", datetime.now(UTC).isoformat(timespec="seconds"))
    data[key] = entry
    fd, tmp = tempfile.mkstemp(prefix=".capacity-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_capacity(key: str) -> dict | None:
    """The report saved under ``key`` (``machine_key``): its ``capacity`` (int, sessions) and
    ``measured_at`` among the rest; None when there is none, or the file is missing, unreadable
    or corrupt, or the entry has no integer ``capacity`` (never raises for a bad file)."""
    entry = _read_all(capacity_path()).get(key)
    if not isinstance(entry, dict):
        return None
    cap = entry.get("capacity")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        return None
    return entry


# --- the measurement ---------------------------------------------------------------------
def _rss_mb() -> float:
    """This process's resident set (VmRSS), MiB."""
    from runtime.bench.harness import proc_stats

    return proc_stats(os.getpid())[1]


def speech_prompts(limit: int = 16) -> list[np.ndarray]:
    """The held-out sentence prompts (``harness.sentence_prompts``: 1–5 s each) as float32 [n]
    mono at the output rate (48 kHz). Raises FileNotFoundError without the Asterisk prompts."""
    from engines.audio import OUTPUT_SAMPLE_RATE
    from runtime.audio.resample import resample
    from runtime.bench.harness import sentence_prompts

    return [resample(a, r, OUTPUT_SAMPLE_RATE).astype(np.float32)
            for _n, a, r in sentence_prompts(limit)]


def _tick_recorder():
    """A ``runtime.serve.metrics.Metrics`` (what the server passes its scheduler) that also
    keeps every tick's seconds in ``ticks_s`` (a list)."""
    from runtime.serve.metrics import Metrics

    class _Observed:
        def __init__(self, hist, into: list[float]) -> None:
            self.hist, self.into = hist, into

        def observe(self, value: float) -> None:
            self.into.append(value)
            self.hist.observe(value)

    m = Metrics()
    m.ticks_s = []
    m.tick_seconds = _Observed(m.tick_seconds, m.ticks_s)
    return m


def _warm_up(renderer, motion, state, fps: Fraction, speech: np.ndarray) -> None:
    """Make the one-off allocations a first session makes (the motion model's and pitch
    tracker's first calls, the renderer's first call, libvpx and libopus) with a throwaway
    session of 25 frames, so that ``rss_mb_per_session`` counts what sessions add. Blocking."""
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.codecs.vpx import Vp8Encoder

    from engines.renderer import to_uint8
    from runtime.live.session import Session
    from runtime.live.tracks import audio_frames, video_frame

    session = Session("warm-up", state, motion, fps)
    session.queue.add("warm-up", speech, done=True)
    vp8, opus = Vp8Encoder(), OpusEncoder()
    for _ in range(25):
        job = session.advance()
        crop = to_uint8(renderer.render([state.source], job.keypoints[None]))[0]
        vp8.encode(video_frame(session.clock, job.index, state.compositor.paste(crop)))
        for frame in audio_frames(session.clock, job.index, job.audio):
            opus.encode(frame)
    # not closed: its tracks' asyncio queues belong to the loop, and nothing reads them


def _encode_timed(encoder, frame, stages, stage: str) -> None:
    """Executor thread: encode one frame, adding the seconds to ``stage``."""
    t0 = time.perf_counter()
    encoder.encode(frame)
    stages.add(stage, time.perf_counter() - t0)


async def _consume(track, encoder, stages, stage: str, count: list[int]) -> None:
    """Read ``track`` and encode each frame in the default executor, as aiortc's
    ``RTCRtpSender`` does, counting encoded frames in ``count[0]`` until the track ends."""
    from aiortc.mediastreams import MediaStreamError

    loop = asyncio.get_running_loop()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        await loop.run_in_executor(None, _encode_timed, encoder, frame, stages, stage)
        count[0] += 1


async def _feed(session, prompts: list[np.ndarray], first: int, delay: float) -> None:
    """Keep ``session`` talking: after ``delay`` s, whenever its queue holds under ``TOP_UP_S``
    of audio, queue the next prompt (from prompt ``first`` on) as a finished utterance."""
    from engines.audio import OUTPUT_SAMPLE_RATE
    from runtime.serve.speech import queue_speech

    await asyncio.sleep(delay)
    k = first
    while not session.closed:
        while session.queue.buffered < TOP_UP_S * OUTPUT_SAMPLE_RATE:
            queue_speech(session, f"{session.id}-p{k}", prompts[k % len(prompts)], done=True)
            k += 1
        await asyncio.sleep(FEED_PERIOD_S)


async def _step(n: int, renderer, motion, state, fps: Fraction, prompts: list[np.ndarray],
                seconds: float, warmup_s: float, rss0: float) -> dict[str, Any]:
    """Run ``n`` sessions from a clean scheduler; returns the step's figures (module doc)."""
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.codecs.vpx import Vp8Encoder

    from runtime.live.scheduler import Scheduler
    from runtime.live.session import Session
    from runtime.live.stages import StageTimes

    metrics = _tick_recorder()
    scheduler = Scheduler(renderer, fps, metrics)
    sessions = [Session(f"c{n}s{i}", state, motion, fps, seed=i) for i in range(n)]
    video = [[0] for _ in sessions]
    audio = [[0] for _ in sessions]
    tasks: list[asyncio.Task] = []
    for i, s in enumerate(sessions):
        scheduler.add(s)
        tasks += [asyncio.create_task(_feed(s, prompts, i, i * STAGGER_S)),
                  asyncio.create_task(_consume(s.video_track, Vp8Encoder(), scheduler.stages,
                                               "encode_video", video[i])),
                  asyncio.create_task(_consume(s.audio_track, OpusEncoder(), scheduler.stages,
                                               "encode_audio", audio[i]))]
    scheduler.start()
    try:
        await asyncio.sleep(warmup_s)
        ticks_from = len(metrics.ticks_s)
        v0 = [c[0] for c in video]
        f0 = sum(s.frame for s in sessions)
        r0 = sum(s.frames_rendered for s in sessions)
        late0, ticks0 = scheduler.late_ticks, scheduler.ticks
        drops0 = sum(s.video_track.dropped for s in sessions)
        st0 = scheduler.stages.snapshot()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        st1 = scheduler.stages.snapshot()
        v1 = [c[0] for c in video]
        f1 = sum(s.frame for s in sessions)
        r1 = sum(s.frames_rendered for s in sessions)
        late1, ticks1 = scheduler.late_ticks, scheduler.ticks
        drops1 = sum(s.video_track.dropped for s in sessions)
        tick_s = np.array(metrics.ticks_s[ticks_from:], np.float64)
        rss = _rss_mb()
    finally:
        for s in sessions:
            s.close()
            scheduler.remove(s)
        await scheduler.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    wall = wall1 - wall0
    rates = [(b - a) / wall for a, b in zip(v0, v1)]
    frames = f1 - f0
    stage_ms = StageTimes.per_frame_ms(st0, st1, frames) if frames > 0 else \
        dict.fromkeys(st0, 0.0)
    ticks, late = ticks1 - ticks0, late1 - late0
    p50 = float(np.percentile(tick_s, 50)) * 1000 if len(tick_s) else float("inf")
    p95 = float(np.percentile(tick_s, 95)) * 1000 if len(tick_s) else float("inf")
    holds = bool(min(rates) >= HOLD_FPS_FRACTION * float(fps)
                 and p95 <= 1000 * float(1 / fps) and late <= MAX_LATE_FRACTION * ticks)
    return {
        "sessions": n,
        "fps_min": round(min(rates), 2), "fps_mean": round(float(np.mean(rates)), 2),
        "tick_p50_ms": round(p50, 2), "tick_p95_ms": round(p95, 2),
        "late_ticks": late, "ticks": ticks, "frames": frames, "frames_rendered": r1 - r0,
        "track_drops": drops1 - drops0,
        "stage_ms_per_frame": {k: round(v, 3) for k, v in stage_ms.items()},
        "cpu_percent": round(100 * (cpu1 - cpu0) / wall, 1),
        "rss_mb": round(rss, 1), "rss_mb_per_session": round((rss - rss0) / n, 1),
        "seconds": round(wall, 2),
        "holds": holds,
    }


async def measure_capacity(backend: str = "auto", size: int = 256, fps: int | str | Fraction = 25,
                           max_sessions: int = 16, seconds: float = 10.0, warmup_s: float = 2.0,
                           avatar: str = "default", threads: int | None = None,
                           on_step: Callable[[dict], None] | None = None,
                           sessions: Sequence[int] | None = None) -> dict[str, Any]:
    """Measure how many sessions this machine serves at ``fps``; returns the report (not saved).

    Runs on the caller's event loop (loading runs in the default executor, so the loop stays
    responsive); takes about (``warmup_s`` + ``seconds`` + ~0.5) s per step, plus loading.

    Args:
        backend: renderer backend (``engines.renderer.BACKENDS``).
        size: renderer side R, pixels (256 or 512).
        fps: frame rate, exact (``runtime.clock.as_fps``).
        max_sessions: the largest N tried (≥ 1).
        seconds: measured seconds per step; warmup_s: seconds run before measuring.
        avatar: avatar every session shows.
        threads: ONNX Runtime intra-op threads of the renderer (None: ONNX Runtime's own
            choice, as ``facecast serve``, except under a narrowed CPU affinity such as
            ``taskset``: then the usable cores, because ONNX Runtime's default pool pins its
            threads to every physical core and so escapes the affinity; ``renderer_threads``
            in the report says which).
        on_step: called with each step's figures as it finishes.
        sessions: the session counts to try, increasing (e.g. 1, 8, 16, 32, 64 on a GPU, where
            stepping by one would take too long); None: 1, 2, … ``max_sessions``. ``capacity``
            is then the largest count tried that held.

    Returns ``{"backend", "size", "fps", "cores", "cpu_model", "renderer": {"file", "sha256"},
    "key": machine_key(...), "capacity", "steps": [...], "renderer_threads" (None: ONNX
    Runtime's default), "rss_mb_loaded" (MiB, models and
    avatar loaded), "rss_mb_idle" (MiB, after ``_warm_up``: the baseline of
    ``rss_mb_per_session``), "elapsed_s"}``; the
    steps' figures are described in the module docstring.

    Raises:
        ValueError: bad size, fps or max_sessions; RuntimeError (or the backend's error): a
            backend that cannot run here; FileNotFoundError: no Asterisk prompts or models.
    """
    import avatars
    from engines.motion import MotionEngine
    from engines.renderer import NeuralRenderer
    from runtime.clock import as_fps, wire_fps
    from runtime.live.scheduler import AvatarState

    if max_sessions < 1:
        raise ValueError("max_sessions must be at least 1")
    if sessions is not None and (not sessions or any(n < 1 for n in sessions)
                                 or list(sessions) != sorted(set(sessions))):
        raise ValueError("sessions must be increasing counts of at least 1")
    fps_ = as_fps(fps)
    ort_threads = threads
    if ort_threads is None and usable_cores() < (os.cpu_count() or 1):
        ort_threads = usable_cores()
    started = time.perf_counter()
    loop = asyncio.get_running_loop()

    def load():
        renderer = NeuralRenderer(size, backend, threads=ort_threads)
        motion = MotionEngine()
        bundle = avatars.load(avatar)
        state = AvatarState.build(bundle.name, bundle, renderer)
        prompts = speech_prompts()
        loaded = _rss_mb()
        _warm_up(renderer, motion, state, fps_, prompts[0])
        return renderer, motion, state, prompts, loaded

    renderer, motion, state, prompts, rss_loaded = await loop.run_in_executor(None, load)
    model = getattr(renderer.renderer, "path", None) or renderer_model_path(renderer.backend, size)
    rss0 = _rss_mb()
    steps: list[dict] = []
    capacity = 0
    for n in sessions or range(1, max_sessions + 1):
        step = await _step(n, renderer, motion, state, fps_, prompts, seconds, warmup_s, rss0)
        steps.append(step)
        log.info("capacity step %d: fps_min %.2f, tick p95 %.1f ms, late %d/%d: %s", n,
                 step["fps_min"], step["tick_p95_ms"], step["late_ticks"], step["ticks"],
                 "holds" if step["holds"] else "does not hold")
        if on_step is not None:
            on_step(step)
        if not step["holds"]:
            break
        capacity = n
    return {
        "backend": renderer.backend, "size": size, "fps": wire_fps(fps_),
        "cores": usable_cores(), "cpu_model": cpu_model(),
        "renderer": {"file": Path(model).name, "sha256": file_hash(Path(model))},
        "key": machine_key(renderer.backend, size, fps_),
        "capacity": capacity, "steps": steps,
        "renderer_threads": ort_threads,
        "rss_mb_loaded": round(rss_loaded, 1), "rss_mb_idle": round(rss0, 1),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def run_capacity(backend: str = "auto", size: int = 256, fps: int | str | Fraction = 25,
                 max_sessions: int = 16, seconds: float = 10.0, warmup_s: float = 2.0,
                 avatar: str = "default", threads: int | None = None,
                 on_step: Callable[[dict], None] | None = None,
                 sessions: Sequence[int] | None = None) -> dict[str, Any]:
    """``measure_capacity`` on a new event loop (``asyncio.run``), for the command line; same
    arguments and result. Must not be called from a running loop."""
    return asyncio.run(measure_capacity(backend, size, fps, max_sessions, seconds, warmup_s,
                                        avatar, threads, on_step, sessions))


def table(report: dict) -> str:
    """The report as a readable table (one line per step, then the capacity)."""
    head = (f"backend {report['backend']}, size {report['size']}, {report['fps']} fps, "
            f"{report['cores']} core(s) of {report['cpu_model']}, renderer "
            f"{report['renderer']['file']} {report['renderer']['sha256']}")
    columns = (f"{'N':>3} {'fps min':>8} {'mean':>6} {'tick p50':>9} {'p95':>6} {'late':>6} "
               f"{'cpu %':>6} {'RSS MiB':>8} {'/sess':>6}  stage ms/frame")
    lines = [head, columns]
    for s in report["steps"]:
        stages = " ".join(f"{k}={v:.2f}" for k, v in s["stage_ms_per_frame"].items())
        lines.append(f"{s['sessions']:>3} {s['fps_min']:>8.2f} {s['fps_mean']:>6.2f} "
                     f"{s['tick_p50_ms']:>9.1f} {s['tick_p95_ms']:>6.1f} "
                     f"{s['late_ticks']:>6} {s['cpu_percent']:>6.0f} {s['rss_mb']:>8.0f} "
                     f"{s['rss_mb_per_session']:>6.1f}  {stages}"
                     f"{'' if s['holds'] else '  (does not hold)'}")
    lines.append(f"capacity: {report['capacity']} session(s) at {report['fps']} fps")
    if report.get("saved_to"):
        lines.append(f"saved to {report['saved_to']}")
    return "\n".join(lines)
