"""``facecast bench rig|motion|renderer``: how fast the rig, the motion model and the renderer run,
printed as JSON.

Timings are medians over repeats with ``time.perf_counter``; on a shared machine compare ratios
taken in one run rather than absolute figures across runs.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import avatars
from avatars.retarget import Retargeter
from avatars.rig import N_COEFFICIENTS, NEUTRAL_POSE, Rig, in_domain


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_rig(avatar_name: str = "default", size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Measure rig construction, batched keypoint evaluation and retargeting.

    Returns a JSON-ready dict: ``rig_build_ms``; ``keypoints_us_per_frame`` for batch sizes
    1, 8 and 64; ``retarget_ms_cold`` (from neutral) and ``retarget_ms_warm`` (from the previous
    frame of a smooth sequence); ``retarget_max_coeff_error`` over the measured frames.
    """
    avatar = avatars.load(avatar_name)
    rng = np.random.default_rng(seed)
    build_s = _median_s(lambda: Rig.for_avatar(avatar, size), 5)
    rig = Rig.for_avatar(avatar, size)
    per_frame = {}
    for batch in (1, 8, 64):
        c = rng.uniform(0, 1, (batch, N_COEFFICIENTS))
        p = np.tile(NEUTRAL_POSE, (batch, 1))
        p[:, :3] = rng.uniform(-0.3, 0.3, (batch, 3))
        per_frame[str(batch)] = round(
            _median_s(lambda c=c, p=p: rig.keypoints(c, p), 50) / batch * 1e6, 1)

    fit = Retargeter(avatar.crop_landmarks(size), size)
    cold, warm, errors = [], [], []
    for _ in range(10):
        c = rng.uniform(0, 1, N_COEFFICIENTS)
        if not in_domain(c)[0]:
            continue
        pose = np.concatenate([rng.uniform(-0.3, 0.3, 3), rng.uniform(-0.05, 0.05, 2), [1.0]])
        kp = rig.keypoints(c[None], pose[None])[0]
        t0 = time.perf_counter()
        res = fit.fit(kp, warm_start=False)
        cold.append(time.perf_counter() - t0)
        errors.append(float(np.abs(res.coeffs - c).max()))
        nudged = c.copy()
        nudged[0] = min(1.0, nudged[0] + 0.05)  # the next video frame: a small change
        kp2 = rig.keypoints(nudged[None], (pose + 0.01)[None])[0]
        t0 = time.perf_counter()
        fit.fit(kp2, warm_start=True)
        warm.append(time.perf_counter() - t0)
    return {
        "benchmark": "rig",
        "avatar": avatar.name,
        "crop_size": size,
        "rig_build_ms": round(build_s * 1e3, 2),
        "keypoints_us_per_frame": per_frame,
        "retarget_ms_cold": round(float(np.median(cold)) * 1e3, 2),
        "retarget_ms_warm": round(float(np.median(warm)) * 1e3, 2),
        "retarget_max_coeff_error": round(max(errors), 5),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
    }


def bench_motion(seconds: float = 30.0) -> dict[str, Any]:
    """Motion-model compute on CPU: milliseconds per second of audio, streaming in 20-ms chunks
    (the serving path) and offline, on espeak-ng speech (median of 3 runs each)."""
    from engines.audio import CHUNK_SAMPLES, SAMPLE_RATE
    from engines.features import StreamingLogMel
    from engines.motion import MotionEngine
    from runtime.audio.espeak import synthesize
    from runtime.audio.resample import resample

    text = ("Please say your name after the tone, then press the pound key. "
            "Thank you for calling; your call is important to us. ") * 8
    syn = synthesize(text, voice="en-us", rate_wpm=170)
    audio = resample(syn.audio, syn.sample_rate, SAMPLE_RATE)
    audio = np.resize(audio, int(seconds * SAMPLE_RATE)).astype(np.float32)
    engine = MotionEngine()
    duration = audio.size / SAMPLE_RATE

    def streaming() -> None:
        s = engine.stream()
        for i in range(0, audio.size, CHUNK_SAMPLES):
            s.push(audio[i:i + CHUNK_SAMPLES])
        s.finish()

    def features_only() -> None:
        f = StreamingLogMel()
        for i in range(0, audio.size, CHUNK_SAMPLES):
            f.push(audio[i:i + CHUNK_SAMPLES])

    return {
        "benchmark": "motion",
        "audio_seconds": round(duration, 2),
        "chunk_ms": 20,
        "streaming_ms_per_audio_s": round(_median_s(streaming, 3) / duration * 1e3, 3),
        "features_ms_per_audio_s": round(_median_s(features_only, 3) / duration * 1e3, 3),
        "offline_ms_per_audio_s": round(
            _median_s(lambda: engine.offline(audio), 3) / duration * 1e3, 3),
        "lookahead_ms": engine.lookahead_ms,
        "threads": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def bench_renderer(backend: str = "onnxruntime", size: int = 256, batch: int = 1,
                   seconds: float = 5.0, warmup: int = 5, avatar: str = "default",
                   threads: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Warm ``NeuralRenderer.render`` calls on driving keypoints of random rig poses.

    After ``warmup`` calls, calls are timed (``time.perf_counter``) until ``seconds`` have passed
    (at least 3 calls). Returns a JSON-ready dict: ``median_ms_per_frame`` and
    ``p95_ms_per_frame`` (per-call time / batch), ``fps`` (batch / median call time), ``batch``,
    ``size``, ``backend`` (the backend actually used), ``calls``, ``threads`` (ONNX Runtime
    intra-op threads asked for; null = its default) and the machine's CPU count.
    Raises ValueError for a bad size/backend/batch.
    """
    from avatars.expressions import sample_coefficients, sample_pose
    from engines.renderer import NeuralRenderer

    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    av = avatars.load(avatar)
    renderer = NeuralRenderer(size, backend, threads=threads)
    source = renderer.prepare(av)
    rig = Rig.for_avatar(av, size)
    rng = np.random.default_rng(seed)
    pool = 16
    coeffs = np.stack([sample_coefficients(rng) for _ in range(pool * batch)])
    poses = np.stack([sample_pose(rng) for _ in range(pool * batch)])
    driving = rig.keypoints(coeffs, poses).reshape(pool, batch, -1, 2)
    for i in range(warmup):
        renderer.render(source, driving[i % pool])
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < t_end:
        kp = driving[len(times) % pool]
        t0 = time.perf_counter()
        renderer.render(source, kp)
        times.append(time.perf_counter() - t0)
    t = np.asarray(times)
    median = float(np.median(t))
    return {
        "benchmark": "renderer",
        "avatar": av.name,
        "backend": renderer.backend,
        "size": size,
        "batch": batch,
        "calls": len(times),
        "median_ms_per_frame": round(median / batch * 1e3, 3),
        "p95_ms_per_frame": round(float(np.percentile(t, 95)) / batch * 1e3, 3),
        "fps": round(batch / median, 2),
        "threads": threads,
        "cpus": os.cpu_count(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
