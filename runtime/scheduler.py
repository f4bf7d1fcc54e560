"""The process's frame clock and shared renderer: one tick per video frame for all sessions.

Each tick (every 1/fps s of wall time, counted from the start so it never drifts) the scheduler
runs, in one worker thread: ``Session.advance()`` for every session, **one batched renderer
call** for all of them (rows may be different avatars), paste-back, and the ``av`` frames. The
event loop then hands each session its frame and audio. If a tick starts more than one frame
late (the CPU cannot keep up), it skips rendering for that tick: every session still gets its
audio on time and the video frame is counted as dropped — audio is never delayed for video.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from avatars.bundle import Avatar
from engines.audio import OUTPUT_SAMPLE_RATE

log = logging.getLogger("facecast.scheduler")


@dataclass(frozen=True)
class AvatarState:
    """Everything per avatar that sessions share: bundle, renderer source, rig, compositor."""

    name: str
    avatar: Avatar
    source: object  # engines.renderer.AvatarSource
    rig: object  # avatars.rig.Rig at the renderer's size
    compositor: object  # runtime.compositor.Compositor

    @staticmethod
    def build(name: str, avatar: Avatar, renderer) -> AvatarState:
        from avatars.rig import Rig
        from runtime.compositor import Compositor

        return AvatarState(name, avatar, renderer.prepare(avatar),
                           Rig.for_avatar(avatar, renderer.size),
                           Compositor(avatar, renderer.size))


@dataclass
class TickStats:
    """Last tick: sessions, whether video was rendered, seconds spent in the worker."""

    sessions: int = 0
    rendered: bool = True
    seconds: float = 0.0


class Scheduler:
    """Drives every session at ``fps`` with one shared renderer.

    Args:
        renderer: an ``engines.renderer.NeuralRenderer`` (one per process).
        fps: frames per second (sessions must use the same rate).
        metrics: optional ``runtime.metrics.Metrics``.
    """

    def __init__(self, renderer, fps: int = 25, metrics=None) -> None:
        self.renderer = renderer
        self.fps = fps
        self.metrics = metrics
        self.sessions: list = []
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="facecast-tick")
        self.last = TickStats()
        self.ticks = 0
        self.late_ticks = 0
        self.last_tick_wall = time.monotonic()
        self._task: asyncio.Task | None = None

    def add(self, session) -> None:
        self.sessions.append(session)

    def remove(self, session) -> None:
        if session in self.sessions:
            self.sessions.remove(session)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="facecast-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _tick(self, sessions: list, render: bool) -> list[tuple]:
        """Worker thread: advance, render in one batch, paste, wrap as av frames."""
        import av

        from engines.renderer import to_uint8
        from runtime.session import audio_frames

        started = time.perf_counter()
        jobs = [s.advance() for s in sessions]
        frames: list = [None] * len(jobs)
        if render and jobs:
            drv = np.stack([j.keypoints for j in jobs]).astype(np.float32)
            t0 = time.perf_counter()
            crops = to_uint8(self.renderer.render([s.avatar.source for s in sessions], drv))
            if self.metrics is not None:
                self.metrics.render_seconds.observe(time.perf_counter() - t0)
            for i, (s, crop) in enumerate(zip(sessions, crops)):
                image = s.avatar.compositor.paste(crop)
                if image.shape[0] % 2 or image.shape[1] % 2:  # VP8/H.264 want even sides
                    image = np.ascontiguousarray(image[: image.shape[0] // 2 * 2,
                                                       : image.shape[1] // 2 * 2])
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = jobs[i].index * s.samples_per_frame
                frame.time_base = Fraction(1, OUTPUT_SAMPLE_RATE)
                frames[i] = frame
        out = []
        for job, frame in zip(jobs, frames):
            first = job.index * job.session.samples_per_frame
            out.append((job, frame, audio_frames(job.audio, first)))
        self.last = TickStats(len(jobs), render, time.perf_counter() - started)
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.fps
        t0 = loop.time()
        n = 0
        while True:
            now = loop.time()
            due = t0 + n * period
            if now - due > 1.0:  # stalled for over a second (suspended machine): resync
                log.warning("frame clock %.1f s behind; resynchronising", now - due)
                skipped = int((now - due) / period)
                n += skipped
                self.late_ticks += skipped
            sessions = [s for s in self.sessions if not s.closed]
            if sessions:
                # up to one frame late the next ticks catch up (they run back to back); beyond
                # that this tick's video is dropped so audio stays on time
                render = now - due <= period
                if not render:
                    self.late_ticks += 1
                try:
                    results = await loop.run_in_executor(self.executor, self._tick, sessions,
                                                         render)
                except Exception:  # a bad tick must not stop the clock for everyone
                    log.exception("tick failed")
                    results = []
                for job, frame, audio in results:
                    try:
                        job.session.deliver(job, frame, audio)
                    except Exception:
                        log.exception("delivering to session %s failed", job.session.id)
                if self.metrics is not None:
                    self.metrics.on_tick(results)
                    self.metrics.tick_seconds.observe(self.last.seconds)
            self.ticks += 1
            self.last_tick_wall = time.monotonic()
            n += 1
            delay = t0 + n * period - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
