"""The process's frame clock and shared renderer: one tick per video frame for all sessions.

Each tick (every 1/fps s of wall time, counted from the start so it never drifts) the scheduler
runs, in one worker thread: ``Session.advance()`` for every session, **one batched renderer
call** for all of them (rows may be different avatars), paste-back, and the ``av`` frames. The
event loop then hands each session its frame and audio. If a tick starts more than one frame
late (the CPU cannot keep up), it skips rendering for that tick: every session still gets its
audio on time and the video frame is counted as dropped — audio is never delayed for video.

**Watchdog.** A tick that hangs (a renderer call that never returns, a driver stuck in a lock) or
a clock that dies would freeze every session. ``Scheduler`` runs a watchdog task beside the clock:
when sessions exist and no tick has completed for ``stall_s`` (2 s), it abandons the hung worker
thread (a daemon thread, so it cannot block the process's exit), starts a fresh worker and a fresh
clock, and counts the restart (``restarts``; ``facecast_watchdog_restarts_total``). Sessions and
their speech queues are untouched, so queued speech goes on playing where it stopped. The frame
the hung tick was producing is lost as video and audio (its pts is skipped), but its events
(``speech_started`` / ``speech_ended``) are still delivered when that tick finally returns. A tick
that raises is logged and the clock goes on; if ticks keep failing, no frame is produced and the
watchdog restarts the pipeline the same way. If ``MAX_ABANDONED`` abandoned workers are still
stuck, the watchdog stops starting new ones and reports ``gave_up`` (``/healthz`` answers
``stalled``, 503) so that a process supervisor can restart the process.

**Time.** Pacing and stall detection read an injected ``runtime.live.monotonic.MonotonicClock``
(the real ``SystemClock`` by default; tests pass a ``VirtualClock`` and run on virtual time). The
period is exactly 1/fps (a ``Fraction``: 30000/1001 fps is exact), and tick n is due at
start + n·period, so the clock never drifts. Media timestamps never come from this clock: each
session stamps its frames from its own sample counter (``Session.clock``,
``runtime.live.tracks``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from avatars.bundle import Avatar
from runtime.clock import as_fps
from runtime.live.monotonic import MonotonicClock, SystemClock
from runtime.live.stages import StageTimes
from runtime.live.tracks import audio_frames, video_frame

log = logging.getLogger("facecast.scheduler")

STALL_S = 2.0
"""Seconds without a completed tick (while sessions exist) after which the pipeline is restarted."""
WATCHDOG_PERIOD_S = 0.25
"""How often the watchdog looks."""
def default_composite_threads() -> int:
    """Composite threads by default: half the cores this process may use
    (``os.sched_getaffinity``), at most 8, and none besides the tick thread below 4 cores.

    Paste-back releases the GIL (two threads pasted 1.85–1.98× as fast as one on an idle
    2-core machine), but on 2 cores the renderer's and the encoders' threads already fill both:
    there a pool of 2 made the two-session tick slower (p50 34.1–34.3 → 37.5–38.0 ms,
    ``facecast bench capacity``, two runs each)."""
    cores = len(os.sched_getaffinity(0))
    return 1 if cores < 4 else min(8, cores // 2)


def _has_sink(session) -> bool:
    """True when ``session`` takes its frames through ``Session.sink`` rather than its tracks
    (sessions without the attribute, such as test doubles, use tracks)."""
    return getattr(session, "sink", None) is not None


MAX_ABANDONED = 3
"""Abandoned workers still stuck at which the watchdog stops starting new ones (gives up)."""
STOP_JOIN_S = 10.0
"""Seconds ``Scheduler.stop`` waits for the tick thread to finish its last call: a thread still
inside ONNX Runtime when the interpreter exits can abort the process (SIGABRT)."""


class Worker:
    """One daemon thread running submitted calls in order; ``submit`` returns a
    ``concurrent.futures.Future``. Unlike ``ThreadPoolExecutor`` its thread is a daemon, so a call
    that never returns cannot keep the process from exiting after the watchdog abandoned it.

    Args:
        name: the thread's name.
    """

    def __init__(self, name: str = "facecast-tick") -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting clock
                fut.set_exception(exc)

    def submit(self, fn, *args) -> concurrent.futures.Future:
        """Queue ``fn(*args)``; raises RuntimeError after ``shutdown``."""
        if not self.thread.is_alive():
            raise RuntimeError("worker thread is not running")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fut, fn, args))
        return fut

    def shutdown(self) -> None:
        """Let the thread end after its current call (never waits for it)."""
        self._jobs.put(None)

    @property
    def busy_alive(self) -> bool:
        """True while the thread still runs (an abandoned one: still stuck in its call)."""
        return self.thread.is_alive()


@dataclass(frozen=True)
class AvatarState:
    """Everything per avatar that sessions share: bundle, renderer source, rig, compositor."""

    name: str
    avatar: Avatar
    source: object  # engines.renderer.AvatarSource
    rig: object  # avatars.rig.Rig at the renderer's size
    compositor: object  # runtime.compositor.Compositor

    @staticmethod
    def build(name: str, avatar: Avatar, renderer, badge=None,
              watermark: bool = False) -> AvatarState:
        """Prepare ``avatar`` for ``renderer``; ``badge``: the disclosure badge of its frames
        (``runtime.provenance.disclosure.Badge``; None: none); ``watermark``: the invisible mark
        in its frames (``runtime.compositor.Compositor``)."""
        from avatars.rig import Rig
        from runtime.compositor import Compositor

        return AvatarState(name, avatar, renderer.prepare(avatar),
                           Rig.for_avatar(avatar, renderer.size),
                           Compositor(avatar, renderer.size, badge, watermark))


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
        fps: frames per second, exact (25, ``"30000/1001"``, a ``Fraction``; see
            ``runtime.clock.as_fps``); sessions must use the same rate. Raises ValueError
            outside 1–240.
        metrics: optional ``runtime.serve.metrics.Metrics``.
        stall_s: seconds without a completed tick (while sessions exist) before the watchdog
            restarts the worker and the clock (None: no watchdog).
        clock: what pacing and the watchdog read (default ``SystemClock``: ``time.monotonic``).
        composite_threads: threads that paste faces back and wrap frames, one session each,
            in parallel (NumPy and OpenCV release the GIL); 0: ``default_composite_threads()``.
            A tick with one session composites on the tick thread.

    Attributes:
        stages: seconds per pipeline stage (``runtime.live.stages.StageTimes``): motion,
            behaviour, rig, render, composite.
        fps, period: the frame rate and the tick period 1/fps, seconds (both ``Fraction``).
        ticks, late_ticks: clock ticks run, and ticks that dropped their video (or were skipped).
        last_tick_wall: ``clock.now()`` of the last clock step.
        last_progress: ``clock.now()`` of the last completed tick (or of a moment with no
            sessions, or of the last restart): what the watchdog watches.
        restarts: pipeline restarts by the watchdog. gave_up: True while the watchdog refuses to
            restart (``MAX_ABANDONED`` abandoned workers still stuck).
        composite_failures: frames whose paste-back, badge or invisible watermark failed: they
            are dropped (the session's ``frames_dropped``), never sent unmarked, and counted
            in ``/metrics`` as ``facecast_composite_failures_total``.
    """

    def __init__(self, renderer, fps: int | str | Fraction = 25, metrics=None,
                 stall_s: float | None = STALL_S, clock: MonotonicClock | None = None,
                 composite_threads: int = 0) -> None:
        self.renderer = renderer
        self.stages = StageTimes()
        self.composite_threads = composite_threads or default_composite_threads()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.fps = as_fps(fps)
        self.period = 1 / self.fps
        self.metrics = metrics
        self.stall_s = stall_s
        self.clock: MonotonicClock = clock if clock is not None else SystemClock()
        self.sessions: list = []
        self.worker = Worker()
        self.last = TickStats()
        self.ticks = 0
        self.late_ticks = 0
        self.last_tick_wall = self.clock.now()
        self.last_progress = self.clock.now()
        self.restarts = 0
        self.composite_failures = 0
        self._gave_up_logged = False
        self._abandoned: list[Worker] = []
        self._task: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None

    def add(self, session) -> None:
        """Drive ``session`` (a ``runtime.live.session.Session``) from the next tick on. Raises
        ValueError if its frame rate is not the scheduler's."""
        if session.clock.fps != self.fps:
            raise ValueError(f"session {session.id} runs at {session.clock.fps} fps, the "
                             f"scheduler at {self.fps} fps")
        self.sessions.append(session)

    def remove(self, session) -> None:
        """Stop driving ``session`` (no error if it is not driven)."""
        if session in self.sessions:
            self.sessions.remove(session)

    def start(self) -> None:
        """Start the clock (and the watchdog) on the running event loop."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self.last_progress = self.clock.now()
            self._task = loop.create_task(self._run(), name="facecast-clock")
        if self._watchdog is None and self.stall_s is not None:
            self._watchdog = loop.create_task(self._watch(), name="facecast-watchdog")

    async def stop(self) -> None:
        """Stop the watchdog, the clock and the worker; waits (in an executor thread, up to
        ``STOP_JOIN_S``) for a tick in progress to finish. Abandoned workers are not waited
        for: they are stuck by definition."""
        for task in (self._watchdog, self._task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._watchdog = self._task = None
        self.worker.shutdown()
        await asyncio.get_running_loop().run_in_executor(None, self.worker.thread.join,
                                                         STOP_JOIN_S)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # --- watchdog -------------------------------------------------------------------------
    def stalled(self, now: float | None = None) -> bool:
        """True when sessions exist and no tick completed for ``stall_s`` (2 s if no watchdog),
        or the watchdog gave up."""
        now = self.clock.now() if now is None else now
        live = any(not s.closed for s in self.sessions)
        return self.gave_up or (live and now - self.last_progress > (self.stall_s or STALL_S))

    def seconds_since_progress(self) -> float:
        """Seconds (on ``clock``) since the last completed tick, or since the last moment with
        nothing to produce or the last restart: what ``stalled`` compares with ``stall_s``."""
        return self.clock.now() - self.last_progress

    @property
    def gave_up(self) -> bool:
        """True while ``MAX_ABANDONED`` abandoned workers are still stuck (no more restarts)."""
        return self.abandoned_alive >= MAX_ABANDONED

    @property
    def abandoned_alive(self) -> int:
        """Abandoned worker threads still stuck in their call."""
        self._abandoned = [w for w in self._abandoned if w.busy_alive]
        return len(self._abandoned)

    def restart(self, reason: str = "stalled") -> bool:
        """Abandon the worker and the clock and start fresh ones; sessions are kept. On the event
        loop. Returns False (and sets ``gave_up``) when ``MAX_ABANDONED`` workers are stuck."""
        if self.gave_up:
            if not self._gave_up_logged:
                log.critical("pipeline stalled and %d abandoned workers are still stuck: not "
                             "restarting again; restart the process", MAX_ABANDONED)
            self._gave_up_logged = True
            return False
        self._gave_up_logged = False
        self.restarts += 1
        if self.metrics is not None:
            self.metrics.watchdog_restarts.inc()
        log.error("watchdog: pipeline %s (no frame for %.1f s); restarting the worker and the "
                  "clock (restart %d), %d session(s) kept", reason,
                  self.seconds_since_progress(), self.restarts, len(self.sessions))
        if self._task is not None:
            self._task.cancel()  # its tick's late result is handled by _abandoned_tick
        old = self.worker
        old.shutdown()
        self._abandoned.append(old)
        self.worker = Worker()
        self.last_progress = self.clock.now()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="facecast-clock")
        return True

    async def _watch(self) -> None:
        while True:
            await self.clock.sleep(WATCHDOG_PERIOD_S)
            try:
                now = self.clock.now()
                if not any(not s.closed for s in self.sessions):
                    self.last_progress = now  # nothing to produce is not a stall
                    continue
                if self._task is None or self._task.done():
                    self.restart("clock stopped")
                elif now - self.last_progress > self.stall_s:
                    self.restart("stalled")
            except Exception:  # the watchdog itself must not die
                log.exception("watchdog check failed")

    def _abandoned_tick(self, loop: asyncio.AbstractEventLoop,
                        fut: concurrent.futures.Future) -> None:
        """A tick whose clock was cancelled finished at last (worker thread): its frames are
        stale and dropped, its events (speech started/ended) still go out, on the loop."""
        if fut.cancelled() or fut.exception() is not None:
            return

        def deliver_events() -> None:
            for job, _frame, _audio in fut.result():
                session = job.session
                if session.closed:
                    continue
                session.frames_dropped += 1
                for event in job.events:
                    try:
                        session.on_event(event)
                    except Exception:
                        log.exception("late event for session %s failed", session.id)

        try:
            loop.call_soon_threadsafe(deliver_events)
        except RuntimeError:  # the loop is closed: the server stopped meanwhile
            pass

    def _tick(self, sessions: list, render: bool) -> list[tuple]:
        """Worker thread: advance every session, render the watched ones
        (``Session.render_video``) in one batch, paste, wrap as ``av`` frames stamped by each
        session's clock. Returns [(FrameJob, av.VideoFrame | None,
        [av.AudioFrame, ...]), ...] in the order of ``sessions``; for a session with a ``sink``
        (``Session.sink``) nothing is wrapped: (FrameJob, uint8 [H, W, 3] RGB image | None, [])."""
        from engines.renderer import to_uint8

        started = time.perf_counter()
        jobs = [s.advance(self.stages) for s in sessions]
        frames: list = [None] * len(jobs)
        watched = [i for i, s in enumerate(sessions) if s.render_video]
        if render and watched:
            drv = np.stack([jobs[i].keypoints for i in watched]).astype(np.float32)
            t0 = time.perf_counter()
            crops = to_uint8(self.renderer.render([sessions[i].avatar.source for i in watched],
                                                  drv))
            render_s = time.perf_counter() - t0
            self.stages.add("render", render_s)
            if self.metrics is not None:
                self.metrics.render_seconds.observe(render_s)

            def composite(k: int):
                t = time.perf_counter()
                i = watched[k]
                s = sessions[i]
                try:  # paste-back, badge and watermark: a frame that fails is not sent at all
                    image = s.avatar.compositor.paste(crops[k])
                except Exception:
                    self.composite_failures += 1
                    if self.metrics is not None:
                        self.metrics.composite_failures.inc()
                    n = self.composite_failures
                    if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th … failure: no log flood
                        log.exception("compositing a frame of session %s failed; frame dropped "
                                      "(%d so far)", s.id, n)
                    return None
                frame = image if _has_sink(s) else video_frame(s.clock, jobs[i].index, image)
                self.stages.add("composite", time.perf_counter() - t)
                return frame

            if len(watched) == 1 or self.composite_threads == 1:
                done = [composite(k) for k in range(len(watched))]
            else:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.composite_threads, thread_name_prefix="facecast-composite")
                done = list(self._pool.map(composite, range(len(watched))))
            for i, frame in zip(watched, done):
                frames[i] = frame
        out = []
        for job, frame in zip(jobs, frames):
            audio = [] if _has_sink(job.session) else audio_frames(job.session.clock, job.index,
                                                                    job.audio)
            out.append((job, frame, audio))
        self.last = TickStats(len(jobs), render, time.perf_counter() - started)
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = float(self.period)
        t0 = self.clock.now()
        n = 0
        while True:
            now = self.clock.now()
            due = t0 + float(n * self.period)  # exact multiple of 1/fps: no drift
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
                fut = self.worker.submit(self._tick, sessions, render)
                try:
                    results = await asyncio.wrap_future(fut)
                    self.last_progress = self.clock.now()
                except asyncio.CancelledError:  # restarted by the watchdog, or stopping
                    fut.add_done_callback(lambda f: self._abandoned_tick(loop, f))
                    raise
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
            else:
                self.last_progress = self.clock.now()
            self.ticks += 1
            self.last_tick_wall = self.clock.now()
            n += 1
            await self.clock.sleep(t0 + float(n * self.period) - self.clock.now())
