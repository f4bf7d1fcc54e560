"""The live pipeline on virtual time (``runtime.live.scheduler`` with a ``VirtualClock``): ticks,
late-tick dropping, the watchdog's restart decision; and one clock for both tracks of a session
at 25 and 30000/1001 fps (``runtime.live.session``, ``runtime.live.tracks``)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from fractions import Fraction

import numpy as np
import pytest

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.clock import AvClock
from runtime.live.monotonic import SystemClock, VirtualClock
from runtime.live.scheduler import AvatarState, Scheduler
from runtime.live.session import FrameJob, Session, lookahead_frames
from runtime.live.tracks import AUDIO_FRAME_SAMPLES, audio_frames, video_frame

NTSC = Fraction(30000, 1001)
EPS = 1e-6
"""Virtual seconds added to an ``advance`` so a tick due exactly at its end (n · period, in
floating point) is not missed by rounding."""


# --- the virtual clock ------------------------------------------------------------------------
def test_virtual_clock_wakes_sleepers_in_deadline_order() -> None:
    async def main():
        clock = VirtualClock(start=10.0)
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2.0), ("a", 1.0),
                                                                  ("c", 5.0))]
        await clock.advance(2.5)
        first = list(woke)
        clock.spend(3.0)  # work that took time: c is due, woken by the next advance
        await clock.advance(0.0)
        await asyncio.gather(*tasks)
        return first, woke, clock.now()

    first, woke, now = asyncio.run(main())
    assert first == [("a", 11.0), ("b", 12.0)]
    assert woke[2] == ("c", 15.5)  # woken late, at the time spent work reached
    assert now == 15.5


def test_virtual_clock_rejects_going_back() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError):
        clock.spend(-1.0)
    with pytest.raises(ValueError):
        asyncio.run(clock.advance(-0.1))


def test_system_clock_is_monotonic_time() -> None:
    import time

    clock = SystemClock()
    a = time.monotonic()
    b = clock.now()
    assert a <= b <= time.monotonic()
    asyncio.run(clock.sleep(-1.0))  # a negative delay only yields


# --- a scheduler with light fake sessions ---------------------------------------------------
class _Compositor:
    def paste(self, crop: np.ndarray) -> np.ndarray:
        return np.zeros((16, 18, 3), np.uint8)


class _Avatar:
    source = None
    compositor = _Compositor()


class _FakeSession:
    """What the scheduler needs of a session: ``advance`` (worker) and ``deliver`` (loop)."""

    def __init__(self, fps=25) -> None:
        self.id = "fake"
        self.closed = False
        self.clock = AvClock(fps)
        self.avatar = _Avatar()
        self.frame = 0
        self.frames_dropped = 0
        self.render_video = True
        self.delivered: list[tuple[int, object, list]] = []

    def advance(self, stages=None) -> FrameJob:
        n = self.frame
        self.frame += 1
        audio = np.zeros(self.clock.frame_start(n + 1) - self.clock.frame_start(n), np.float32)
        return FrameJob(self, n, np.zeros((478, 2), np.float32), audio, [], False)

    def deliver(self, job: FrameJob, video_frame, audio_frames: list) -> None:
        self.delivered.append((job.index, video_frame, audio_frames))

    def on_event(self, event) -> None:
        pass


class _Renderer:
    """Returns grey crops; ``on_call(i)`` runs inside the i-th batched render call."""

    def __init__(self, on_call=None, size: int = 8) -> None:
        self.calls = 0
        self.on_call = on_call
        self.size = size

    def prepare(self, avatar) -> None:
        return None

    def render(self, sources, keypoints: np.ndarray) -> np.ndarray:
        i, self.calls = self.calls, self.calls + 1
        if self.on_call is not None:
            self.on_call(i)
        return np.full((len(sources), 3, self.size, self.size), 0.5, np.float32)


def test_a_hundred_ticks_run_on_virtual_time() -> None:
    async def main():
        clock = VirtualClock()
        sched = Scheduler(_Renderer(), fps=25, clock=clock)
        session = _FakeSession()
        sched.add(session)
        sched.start()
        await clock.advance(4.0 + EPS)  # 100 periods: ticks 0 … 100
        await sched.stop()
        return sched, session

    sched, session = asyncio.run(main())
    assert sched.ticks == 101 and sched.late_ticks == 0
    assert [i for i, _v, _a in session.delivered] == list(range(101))
    assert all(v is not None for _i, v, _a in session.delivered)
    assert session.delivered[100][1].pts == 100 * 1920
    assert sched.restarts == 0 and not sched.stalled()


def test_scheduler_period_is_exact_and_rates_must_match() -> None:
    sched = Scheduler(_Renderer(), fps="30000/1001", stall_s=None)
    try:
        assert sched.fps == NTSC and sched.period == Fraction(1001, 30000)
        with pytest.raises(ValueError, match="fps"):
            sched.add(_FakeSession(fps=25))
        sched.add(_FakeSession(fps=NTSC))
    finally:
        sched.worker.shutdown()


def test_ntsc_ticks_stay_on_the_exact_grid() -> None:
    """30000 ticks at 30000/1001 fps take exactly 1001 virtual seconds: none is late or lost."""

    async def main():
        clock = VirtualClock()
        sched = Scheduler(_Renderer(), fps=NTSC, stall_s=None, clock=clock)
        session = _FakeSession(fps=NTSC)
        sched.add(session)
        sched.start()
        await clock.advance(1001 / 30 + EPS)  # 1000 periods of 1001/30000 s
        await sched.stop()
        return sched, session

    sched, session = asyncio.run(main())
    assert sched.ticks == 1001 and sched.late_ticks == 0
    pts = [v.pts for _i, v, _a in session.delivered]
    assert pts == [AvClock(NTSC).frame_start(n) for n in range(1001)]


def test_a_slow_tick_drops_the_next_video_frame_but_no_audio() -> None:
    """Tick 10 takes 100 ms of virtual time (2.5 periods): tick 11 starts 60 ms late and skips
    rendering; tick 12 (20 ms late) catches up; every tick delivers its audio."""
    clock = VirtualClock()

    def slow(i: int) -> None:
        if i == 10:
            clock.spend(0.1)

    async def main():
        sched = Scheduler(_Renderer(slow), fps=25, clock=clock)
        session = _FakeSession()
        sched.add(session)
        sched.start()
        await clock.advance(1.0 + EPS)
        await sched.stop()
        return sched, session

    sched, session = asyncio.run(main())
    assert sched.late_ticks == 1
    assert [i for i, _v, _a in session.delivered] == list(range(26))
    dropped = [i for i, v, _a in session.delivered if v is None]
    assert dropped == [11]
    assert all(sum(f.samples for f in a) == 1920 for _i, _v, a in session.delivered)


def test_watchdog_restarts_a_hung_tick_on_virtual_time() -> None:
    """Tick 4's render hangs (a real thread, blocked): after 2 virtual seconds without a
    completed tick the scheduler is stalled; the watchdog's next look (every 0.25 s) restarts
    the worker and the clock, frames resume, and the hung tick's frame is lost, not delayed."""
    release = threading.Event()
    clock = VirtualClock(idle_s=0.1)

    def hang(i: int) -> None:
        if i == 4:
            release.wait(30)

    async def main():
        sched = Scheduler(_Renderer(hang), fps=25, stall_s=2.0, clock=clock)
        session = _FakeSession()
        sched.add(session)
        sched.start()
        await clock.advance(2.2)  # last progress at 0.12 s (tick 3): 2.08 s ago
        before = sched.stalled(), sched.restarts, len(session.delivered)
        await clock.advance(0.1)  # the watchdog looks at 2.25 s
        after_restart = sched.restarts, sched.stalled()
        await clock.advance(1.0)
        resumed = [i for i, _v, _a in session.delivered]
        release.set()
        await sched.stop()
        return before, after_restart, resumed

    (stalled, restarts, n_before), after_restart, resumed = asyncio.run(main())
    assert stalled and restarts == 0 and n_before == 4
    assert after_restart == (1, False)
    assert resumed[:4] == [0, 1, 2, 3]
    assert 4 not in resumed  # the hung tick's frame is lost
    assert len(resumed) - 4 >= 20  # about 25 frames in the second after the restart
    assert resumed[4:] == list(range(5, 5 + len(resumed) - 4))


# --- tracks: frames stamped by the clock -----------------------------------------------------
def test_audio_frames_are_cut_at_the_slice_boundaries() -> None:
    c25, ntsc = AvClock(25), AvClock(NTSC)
    frames = audio_frames(c25, 3, np.zeros(1920, np.float32))
    assert [(f.pts, f.samples) for f in frames] == [(5760, 960), (6720, 960)]
    assert frames[0].time_base == Fraction(1, OUTPUT_SAMPLE_RATE)
    assert frames[0].sample_rate == OUTPUT_SAMPLE_RATE
    n = 1  # samples 1601 … 3202: 1602 of them
    frames = audio_frames(ntsc, n, np.zeros(1602, np.float32))
    assert [(f.pts, f.samples) for f in frames] == [(1601, AUDIO_FRAME_SAMPLES), (2561, 642)]
    with pytest.raises(ValueError, match="1602"):
        audio_frames(ntsc, n, np.zeros(1601, np.float32))
    v = video_frame(ntsc, n, np.zeros((7, 9, 3), np.uint8))
    assert (v.pts, v.time_base, v.width, v.height) == (1601, Fraction(1, OUTPUT_SAMPLE_RATE), 8, 6)


# --- a real session: one clock, the motion model's rows on time -------------------------------
@pytest.fixture(scope="module")
def motion_engine():
    from engines.motion import MotionEngine

    return MotionEngine()


def _state(avatar) -> AvatarState:
    return AvatarState.build("default", avatar, _Renderer(size=256))


@pytest.mark.parametrize("fps", [25, NTSC], ids=["25", "ntsc"])
def test_session_slices_and_pts_come_from_one_clock(fps, default_avatar, motion_engine) -> None:
    """Through the scheduler on virtual time: video pts == frame_start(n), audio slice lengths
    sum exactly to frame_start(n), no audio frame crosses a frame boundary, and the queued
    speech comes out sample for sample, K frames later."""
    clock = VirtualClock()
    seen: list[tuple[FrameJob, object, list]] = []

    class Recording(Session):
        def deliver(self, job, video, audio) -> None:
            seen.append((job, video, audio))
            super().deliver(job, video, audio)

    async def main():
        sched = Scheduler(_Renderer(size=256), fps=fps, clock=clock)
        session = Recording("s", _state(default_avatar), motion_engine, fps)
        voice = np.sin(np.arange(OUTPUT_SAMPLE_RATE) * 0.05).astype(np.float32) * 0.3
        session.queue.add("u", voice, done=True)
        sched.add(session)
        sched.start()
        await clock.advance(float(59 / session.fps) + EPS)  # ticks 0 … 59
        await sched.stop()
        session.close()
        return session, voice

    session, voice = asyncio.run(main())
    c = session.clock
    assert c.fps == fps and len(seen) == 60
    total = 0
    for n, (job, video, audio) in enumerate(seen):
        assert job.index == n
        assert video.pts == c.frame_start(n) and video.time_base == c.time_base
        assert audio[0].pts == c.frame_start(n)
        for a, b in itertools.pairwise(audio):
            assert b.pts == a.pts + a.samples
        assert audio[-1].pts + audio[-1].samples == c.frame_start(n + 1)
        total += len(job.audio)
        assert total == c.frame_start(n + 1)
    lengths = {len(job.audio) for job, _v, _a in seen}
    assert lengths == ({1920} if fps == 25 else {1601, 1602})
    played = np.concatenate([job.audio for job, _v, _a in seen])
    k = session.lookahead
    assert not played[:c.frame_start(k)].any()  # the delay line's first K frames: silence
    np.testing.assert_array_equal(played[c.frame_start(k):c.frame_start(k) + len(voice)], voice)


@pytest.mark.parametrize("fps", [25, NTSC], ids=["25", "ntsc"])
def test_mouth_rows_are_ready_when_their_slice_plays(fps, default_avatar, motion_engine) -> None:
    """The 48 → 16 kHz resampler holds audio back; the lookahead K counts it, so on every tick
    the motion model has produced the mouth row of the slice being played (never a stale
    row)."""
    session = Session("s", _state(default_avatar), motion_engine, fps)
    assert session.lookahead == lookahead_frames(motion_engine.delay_frames, fps)
    rng = np.random.default_rng(0)
    session.queue.add("u", rng.normal(0, 0.1, 4 * OUTPUT_SAMPLE_RATE).astype(np.float32),
                      done=True)
    for t in range(int(3 * fps)):
        session.advance()
        assert session.fps_resampler.next_frame >= t + 1 - session.lookahead, t
    session.close()


def test_session_accepts_exact_rates_and_rejects_bad_ones(default_avatar, motion_engine) -> None:
    state = _state(default_avatar)
    s = Session("s", state, motion_engine, "30000/1001")
    assert s.clock == AvClock(NTSC) and s.lookahead == 3
    assert Session("t", state, motion_engine, 25).lookahead == 2
    with pytest.raises(ValueError):
        Session("u", state, motion_engine, 0)
